//! Run-time choice of instruction set. Every kernel is written once as plain Rust over fixed-size arrays,
//! generic over whether fused multiply-add is available, which the compiler vectorises for the baseline target
//! (any x86-64, and aarch64). The small kernels are also compiled, through `dispatch!`, for AVX2+FMA and for
//! AVX-512, the widest the CPU has being chosen at run time; those that carry the most arithmetic (the
//! convolutions, the GEMM, the linear layers' fused gradient and update, the pooling) have versions written with
//! AVX-512 and with AVX2 intrinsics instead, chosen the same way and tested against the plain ones.

use std::sync::OnceLock;

/// The environment variable that caps the instruction set: `avx2` or `baseline` make the kernels run as on a CPU
/// without AVX-512, or without AVX2 either (for comparing speeds, and for testing those paths end to end).
pub const CAP_VAR: &str = "LENET5_SIMD";

/// The cap set by [`CAP_VAR`]: 0 baseline, 1 AVX2, 2 no cap. Read once.
fn cap() -> u8 {
    static CAP: OnceLock<u8> = OnceLock::new();
    *CAP.get_or_init(|| match std::env::var(CAP_VAR).as_deref() {
        Ok("baseline") => 0,
        Ok("avx2") => 1,
        _ => 2,
    })
}

/// Whether [`CAP_VAR`] caps nothing (the int8 engine then takes VNNI where the CPU has it).
#[cfg(target_arch = "x86_64")]
pub(crate) fn uncapped() -> bool {
    cap() >= 2
}

/// The instruction sets the kernels are written for, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Isa {
    /// Plain Rust, compiled for the baseline target (any x86-64, aarch64, wasm32 without SIMD).
    Portable,
    /// WebAssembly's 128-bit SIMD, chosen when the module is compiled with it (there is no detection at run
    /// time): kernels written with its intrinsics that give the portable ones' bits.
    Simd128,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 F, VL, BW and DQ, with AVX2 and FMA.
    Avx512,
}

/// The widest instruction set this CPU has that [`CAP_VAR`] allows. Detected once.
pub(crate) fn isa() -> Isa {
    if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
        return Isa::Simd128;
    }
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        let cap = cap();
        if cap >= 2 && cpu_has(Isa::Avx512) {
            Isa::Avx512
        } else if cap >= 1 && cpu_has(Isa::Avx2) {
            Isa::Avx2
        } else {
            Isa::Portable
        }
    })
}

/// Whether this CPU can run `isa`'s kernels, whatever [`CAP_VAR`] says (for tests of every version).
pub(crate) fn cpu_has(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = || std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        match isa {
            Isa::Portable => true,
            Isa::Simd128 => false,
            Isa::Avx2 => avx2(),
            Isa::Avx512 => {
                avx2()
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512dq")
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        isa == Isa::Portable || (isa == Isa::Simd128 && cfg!(all(target_arch = "wasm32", target_feature = "simd128")))
    }
}

/// Whether the CPU is AMD's, for the one kernel whose fastest form differs between AMD's and Intel's AVX-512
/// (conv1's weight gradient). Detected once.
#[cfg(target_arch = "x86_64")]
pub(crate) fn amd() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        // Leaf 0 of `cpuid`, which every x86-64 CPU has: the vendor in ebx, edx, ecx.
        let v = std::arch::x86_64::__cpuid(0);
        [v.ebx, v.edx, v.ecx]
            == [u32::from_le_bytes(*b"Auth"), u32::from_le_bytes(*b"enti"), u32::from_le_bytes(*b"cAMD")]
    })
}

/// AVX2 register helpers shared by the kernels.
#[cfg(target_arch = "x86_64")]
pub(crate) mod narrow {
    use std::arch::x86_64::*;

    /// The mask of the first `w` lanes of an 8-lane vector (all of them when `w >= 8`), for `vmaskmovps` at the
    /// edge of a row.
    #[inline(always)]
    pub(crate) fn lanes(w: usize) -> __m256i {
        let w = w.min(8) as i32;
        // SAFETY: register operations only; AVX (for the type) is part of AVX2, which every caller has.
        unsafe { _mm256_cmpgt_epi32(_mm256_set1_epi32(w), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)) }
    }

    /// The sum of the eight lanes of `v`: `((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7))`.
    #[inline(always)]
    pub(crate) fn sum_lanes(v: __m256) -> f32 {
        // SAFETY: register operations only, in functions compiled with AVX2.
        unsafe {
            let x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
            _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)))
        }
    }

    /// Eight accumulators -> one vector whose lane `i` is the sum of the lanes of `acc[i]`.
    #[inline(always)]
    pub(crate) unsafe fn sum_lanes_8(acc: &[__m256; 8]) -> __m256 {
        // SAFETY: register operations only.
        unsafe {
            // Pairwise sums within each 128-bit half, twice: half h of `q0` holds the sums of half h of acc[0..4]
            // in its four lanes, and of `q1` those of acc[4..8].
            let q0 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
            let q1 = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
            // Low halves side by side plus high halves side by side.
            _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(q0, q1), _mm256_permute2f128_ps::<0x31>(q0, q1))
        }
    }
}

/// AVX-512 register helpers shared by the kernels.
#[cfg(target_arch = "x86_64")]
pub(crate) mod wide {
    use std::arch::x86_64::*;

    /// `[x.q0 + x.q2, x.q1 + x.q3, y.q0 + y.q2, y.q1 + y.q3]` of the 128-bit quarters of `x` and `y`.
    #[inline(always)]
    unsafe fn fold_halves(x: __m512, y: __m512) -> __m512 {
        // SAFETY: register operations only.
        unsafe {
            _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(x, y), _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y))
        }
    }

    /// Sixteen accumulators -> one vector whose lane `4 i + j` is the sum of the lanes of `acc[i][j]`.
    #[inline(always)]
    pub(crate) unsafe fn reduce_4x4(acc: &[[__m512; 4]; 4]) -> __m512 {
        // SAFETY: register operations only.
        unsafe {
            // Per row r: fold the four 128-bit quarters of its four columns into quarter q of one vector...
            let mut rows = [_mm512_setzero_ps(); 4];
            for (r, row) in rows.iter_mut().enumerate() {
                let (x01, x23) = (fold_halves(acc[r][0], acc[r][1]), fold_halves(acc[r][2], acc[r][3]));
                *row = _mm512_add_ps(
                    _mm512_shuffle_f32x4::<0b10_00_10_00>(x01, x23),
                    _mm512_shuffle_f32x4::<0b11_01_11_01>(x01, x23),
                );
            }
            // ...then, within each 128-bit quarter (column q), sum each row's four lanes into lane r.
            let t01 = _mm512_add_ps(_mm512_unpacklo_ps(rows[0], rows[1]), _mm512_unpackhi_ps(rows[0], rows[1]));
            let t23 = _mm512_add_ps(_mm512_unpacklo_ps(rows[2], rows[3]), _mm512_unpackhi_ps(rows[2], rows[3]));
            let by_column = _mm512_add_ps(
                _mm512_shuffle_ps::<0b01_00_01_00>(t01, t23),
                _mm512_shuffle_ps::<0b11_10_11_10>(t01, t23),
            );
            // Lane 4 q + r -> lane 4 r + q.
            let transpose = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
            _mm512_permutexvar_ps(transpose, by_column)
        }
    }
}

/// The first `w` lanes of a 16-lane AVX-512 vector (all of them when `w >= 16`), for masked loads and stores
/// at the edge of a row.
#[cfg(target_arch = "x86_64")]
pub(crate) fn lanes(w: usize) -> std::arch::x86_64::__mmask16 {
    if w >= 16 { 0xffff } else { (1u16 << w) - 1 }
}

/// The instruction set the kernels run with on this CPU, for reports.
pub fn describe() -> &'static str {
    match isa() {
        Isa::Avx512 => "avx512+fma",
        Isa::Avx2 => "avx2+fma",
        Isa::Simd128 => "wasm simd128",
        Isa::Portable if cfg!(target_arch = "aarch64") => "neon",
        Isa::Portable if cfg!(target_arch = "wasm32") => "wasm32",
        Isa::Portable => "baseline (no avx2/fma)",
    }
}

/// Whether the baseline target already fuses multiply-add (aarch64 always does).
pub const BASELINE_FMA: bool = cfg!(target_arch = "aarch64");

/// `a * b + c`, fused when `FMA` (one rounding), plain otherwise. With `FMA` false this never calls the slow
/// software `fmaf`.
#[inline(always)]
pub fn mul_add<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `grad` where the ReLU output `out` is positive, else zero: the ReLU backward as a select without a branch,
/// which the compiler vectorises (a branch here mispredicts on half of all values).
#[inline(always)]
pub fn relu_mask(out: f32, grad: f32) -> f32 {
    f32::from_bits(grad.to_bits() & ((out > 0.0) as u32).wrapping_neg())
}

/// Evaluates the kernel for the widest instruction set that this CPU has and [`CAP_VAR`] allows: the
/// `avx512` arm, else the `avx2` arm (which CPUs with AVX-512 also take when there is no `avx512` arm), else
/// `portable`; in WebAssembly compiled with SIMD128, the `simd128` arm when there is one. The x86 arms are
/// compiled on x86-64 only, and are `unsafe` calls of `#[target_feature]` functions, which this macro makes
/// only when [`isa`] found those features. Every choice of instruction set in the crate is made here.
macro_rules! select {
    ($(avx512 => $wide:expr,)? $(avx2 => $narrow:expr,)? $(simd128 => $wasm:expr,)? portable => $portable:expr $(,)?) => {
        #[allow(unreachable_patterns)]
        match $crate::simd::isa() {
            $(
                #[cfg(target_arch = "x86_64")]
                #[allow(unused_unsafe)]
                // SAFETY: `isa()` found AVX-512 (F, VL, BW, DQ), AVX2 and FMA on this CPU.
                $crate::simd::Isa::Avx512 => unsafe { $wide },
            )?
            $(
                #[cfg(target_arch = "x86_64")]
                #[allow(unused_unsafe)]
                // SAFETY: `isa()` found AVX2 and FMA on this CPU (every CPU with AVX-512 has them).
                $crate::simd::Isa::Avx2 | $crate::simd::Isa::Avx512 => unsafe { $narrow },
            )?
            $(
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                #[allow(unused_unsafe)]
                // SAFETY: the module was compiled with SIMD128, which every engine that loads it has.
                $crate::simd::Isa::Simd128 => unsafe { $wasm },
            )?
            _ => $portable,
        }
    };
}

/// Defines `fn $name(args)` that runs `$body::<true>` compiled for AVX-512 or for AVX2+FMA, the widest the CPU
/// has (see [`select`]), and `$body::<BASELINE_FMA>` compiled for the baseline target otherwise: one plain body,
/// vectorised by the compiler for each instruction set.
macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
            fn wide($($arg: $ty),*) {
                $body::<true>($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn narrow($($arg: $ty),*) {
                $body::<true>($($arg),*)
            }
            $crate::simd::select! {
                avx512 => wide($($arg),*),
                avx2 => narrow($($arg),*),
                portable => $body::<{ $crate::simd::BASELINE_FMA }>($($arg),*),
            }
        }
    };
}

pub(crate) use {dispatch, select};
