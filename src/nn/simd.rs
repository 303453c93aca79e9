//! Run-time choice of instruction set. Kernels are written once as plain Rust over fixed-size arrays, generic
//! over whether fused multiply-add is available; the compiler vectorises them, once for AVX2+FMA (chosen when
//! the CPU has it) and once for the baseline target, so the binary runs on any x86-64 and on aarch64.

use std::sync::OnceLock;

/// The environment variable that caps the instruction set: `avx2` or `baseline` make the kernels run as on a CPU
/// without AVX-512, or without AVX2 either (for comparing speeds, and for testing those paths end to end).
pub const CAP_VAR: &str = "LENET5_SIMD";

/// The cap set by [`CAP_VAR`]: 0 baseline, 1 AVX2, 2 no cap. Read once.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn cap() -> u8 {
    static CAP: OnceLock<u8> = OnceLock::new();
    *CAP.get_or_init(|| match std::env::var(CAP_VAR).as_deref() {
        Ok("baseline") => 0,
        Ok("avx2") => 1,
        _ => 2,
    })
}

/// Whether this CPU has AVX2 and FMA (x86-64), and [`CAP_VAR`] allows them. Detected once.
pub fn avx2_fma() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            cap() >= 1 && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Whether this CPU also has the AVX-512 subsets the wide kernels use (F, VL, BW, DQ), and [`CAP_VAR`] allows
/// them. Detected once.
pub fn avx512() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            cap() >= 2
                && avx2_fma()
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512dq")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The first `w` lanes of a 16-lane AVX-512 vector (all of them when `w >= 16`), for masked loads and stores
/// at the edge of a row.
#[cfg(target_arch = "x86_64")]
pub(crate) fn lanes(w: usize) -> std::arch::x86_64::__mmask16 {
    if w >= 16 { 0xffff } else { (1u16 << w) - 1 }
}

/// The instruction set the kernels run with on this CPU, for reports.
pub fn describe() -> &'static str {
    if avx512() {
        "avx512+fma"
    } else if avx2_fma() {
        "avx2+fma"
    } else if cfg!(target_arch = "aarch64") {
        "neon"
    } else {
        "baseline (no avx2/fma)"
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

/// Defines `pub fn $name(args) -> ret` that calls `$body::<true>` compiled for AVX-512 or AVX2+FMA, the widest
/// the CPU has, and `$body::<BASELINE_FMA>` compiled for the baseline target otherwise.
macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                fn wide($($arg: $ty),*) {
                    $body::<true>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn fast($($arg: $ty),*) {
                    $body::<true>($($arg),*)
                }
                if $crate::nn::simd::avx512() {
                    // SAFETY: the CPU was just checked to support these AVX-512 subsets, AVX2 and FMA.
                    return unsafe { wide($($arg),*) };
                }
                if $crate::nn::simd::avx2_fma() {
                    // SAFETY: the CPU was just checked to support AVX2 and FMA.
                    return unsafe { fast($($arg),*) };
                }
            }
            $body::<{ $crate::nn::simd::BASELINE_FMA }>($($arg),*)
        }
    };
}

pub(crate) use dispatch;
