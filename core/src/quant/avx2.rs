//! The int8 network with AVX2 intrinsics, and the same code with the fused 16-bit dot product of AVX-VNNI or
//! AVX-512 VNNI (`vpdpwssd`), each tested against [`QLayers::predict_portable`], whose integers they give. With
//! AVX-512 VNNI a network runs the byte kernels of [`super::vnni`] instead (`vpdpbusd` on 512-bit registers),
//! unless a multiplier of 1 or more makes them decline it.
//!
//! Every product is a `u8` activation times an `i8` weight, both held as 16-bit values in pairs: `vpmaddwd`
//! multiplies 16 pairs and adds each pair into an `i32` lane exactly (2 x 255 x 127 < 2^31), and integer sums do
//! not depend on their order, so any arrangement of the work gives the reference's sums. VNNI's `vpdpwssd` does
//! the multiply and the accumulation in one instruction instead of two.
//!
//! - conv1: an output row is 28 values, four vectors of 8 (the last half used). Each padded image row is held as
//!   pairs of neighbours `(p[x], p[x + 1])`, so a kernel row is three pair loads per vector (taps 0-1, 2-3, and 4
//!   with a zero weight). Image rows that are all zero add nothing and are skipped, as in the float kernel.
//! - conv2: the 16 output channels are two vectors, and each output position broadcasts its input pairs: taps
//!   0-1 and 2-3 of each kernel row as horizontal pairs, the fifth column as vertical pairs (rows 0-1, 2-3, and
//!   4 with a zero weight): 13 pairs a channel where 12.5 would be exact.
//! - The linear layers: four rows at a time, 16 inputs a step, the lanes summed at the end.
//! - Requantization: TFLite's fixed point on eight lanes at once ([`requant`]) for the convolutions, whose
//!   multipliers must be below 1 (shift <= 0, as calibration gives them); a network with another runs the plain
//!   engine. The linear layers' few outputs are requantized one at a time by [`Requant::apply`].

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::engine::{QLayer, QLayers};
use super::fixed::Requant;
use super::shape::{C2, IN2, K, OUT2, PH1, S1, S2};

/// The integer multiply-add the kernels are compiled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// `vpmaddwd` then `vpaddd`.
    Avx2,
    /// AVX-VNNI's `vpdpwssd` (VEX: Alder Lake, Zen 5 and later).
    AvxVnni,
    /// AVX-512 VNNI (Cascade Lake, Ice Lake, Zen 4 and later): [`super::vnni`]'s `vpdpbusd` kernels, or this
    /// module's with `vpdpwssd` on 256-bit registers for a network they decline.
    Avx512Vnni,
}

impl Kernel {
    /// Every kernel, narrowest first.
    pub(crate) const ALL: [Kernel; 3] = [Kernel::Avx2, Kernel::AvxVnni, Kernel::Avx512Vnni];

    /// Its name, with the instruction that does the multiply-add.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kernel::Avx2 => "avx2 (vpmaddwd)",
            Kernel::AvxVnni => "avx-vnni (vpdpwssd)",
            Kernel::Avx512Vnni => "avx-512 vnni (vpdpbusd)",
        }
    }

    /// Whether this CPU can run it, whatever `LENET5_SIMD` says (for tests of every version).
    pub(crate) fn cpu_has(self) -> bool {
        let avx2 = crate::simd::cpu_has(crate::simd::Isa::Avx2);
        avx2 && match self {
            Kernel::Avx2 => true,
            Kernel::AvxVnni => std::is_x86_feature_detected!("avxvnni"),
            Kernel::Avx512Vnni => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
        }
    }

    /// The widest this CPU has that `LENET5_SIMD` allows (`avx2` allows no VNNI, `baseline` none of them).
    /// Detected once.
    pub(crate) fn chosen() -> Option<Kernel> {
        static CHOSEN: OnceLock<Option<Kernel>> = OnceLock::new();
        *CHOSEN.get_or_init(|| match crate::simd::isa() {
            crate::simd::Isa::Portable | crate::simd::Isa::Simd128 => None,
            _ if !crate::simd::uncapped() => Some(Kernel::Avx2),
            _ => Kernel::ALL.into_iter().rev().find(|k| k.cpu_has()),
        })
    }
}

/// The weights rearranged for these kernels, once, when the network is built.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Packed {
    /// conv1's weights as pairs of neighbouring taps, `(6 outputs, 5 kernel rows, 3 pairs)`.
    conv1: Vec<i32>,
    /// conv2's weights as pairs, `(6 channels, 13 pairs, 16 outputs)` (see [`CONV2_PAIRS`]).
    conv2: Vec<i32>,
    linear1: Dense,
    linear2: Dense,
    output: Dense,
    /// The network for AVX-512 VNNI's `vpdpbusd` kernels (`None` when a multiplier is 1 or more), its biases
    /// and requantization included.
    quads: Option<super::vnni::Packed>,
}

/// A linear layer's weights widened to 16 bits, each row padded with zeros to a multiple of 16 inputs and the
/// rows to a multiple of 4.
#[derive(Clone, Debug, PartialEq)]
struct Dense {
    stride: usize,
    rows: usize,
    weight: Vec<i16>,
}

/// The pairs held of each row of the padded image (the last read is at 8 x 3 + 4 + 7 = 35).
const PW1: usize = 36;
/// conv2's pairs per input channel: ten horizontal (kernel row `r`, taps `2h, 2h + 1`), then three vertical
/// (column 4, kernel rows `2v, 2v + 1`).
const CONV2_PAIRS: usize = 13;
/// The second half of conv2's pair array: the vertical pairs.
const VERTICAL: usize = IN2 * S2 * S2;

/// `(a, b)` as two 16-bit lanes of an `i32`, `a` the low one (the order `vpmaddwd` pairs them in).
fn pair(a: i32, b: i32) -> i32 {
    (a as i16 as u16 as u32 | (b as i16 as u16 as u32) << 16) as i32
}

impl Packed {
    /// The weights of `layers` for these kernels, or `None` when its shapes are not LeNet-5's.
    pub(crate) fn of(layers: &QLayers) -> Option<Packed> {
        let shapes = [(6, 25), (OUT2, IN2 * K * K), (120, 400), (84, 120)];
        let l = layers.all();
        if l[..4].iter().zip(shapes).any(|(l, s)| (l.outputs(), l.inputs()) != s) || l[4].inputs() != 84 {
            return None;
        }
        let mut conv1 = Vec::with_capacity(6 * K * 3);
        for o in 0..6 {
            for ky in 0..K {
                for p in 0..3 {
                    let tap = |kx: usize| if kx < K { weight(&layers.conv1, o, ky * K + kx) } else { 0 };
                    conv1.push(pair(tap(2 * p), tap(2 * p + 1)));
                }
            }
        }
        let mut conv2 = Vec::with_capacity(IN2 * CONV2_PAIRS * OUT2);
        for c in 0..IN2 {
            for j in 0..CONV2_PAIRS {
                let ((ky0, kx0), (ky1, kx1)) = conv2_pair(j);
                for o in 0..OUT2 {
                    let tap = |ky: usize, kx: usize| {
                        if ky < K { weight(&layers.conv2, o, (c * K + ky) * K + kx) } else { 0 }
                    };
                    conv2.push(pair(tap(ky0, kx0), tap(ky1, kx1)));
                }
            }
        }
        Some(Packed {
            conv1,
            conv2,
            linear1: Dense::of(&layers.linear1),
            linear2: Dense::of(&layers.linear2),
            output: Dense::of(&layers.output),
            quads: super::vnni::Packed::of(layers),
        })
    }
}

impl Packed {
    /// The network for the AVX-512 VNNI kernels, where it has one.
    pub(super) fn quads(&self) -> Option<&super::vnni::Packed> {
        self.quads.as_ref()
    }
}

fn weight(layer: &QLayer, o: usize, tap: usize) -> i32 {
    layer.weight[o * layer.inputs() + tap] as i32
}

/// The two taps `(ky, kx)` of conv2's pair `j` (a kernel row of 5 means the zero weight past the kernel).
fn conv2_pair(j: usize) -> ((usize, usize), (usize, usize)) {
    if j < 10 {
        let (ky, h) = (j / 2, j % 2);
        ((ky, 2 * h), (ky, 2 * h + 1))
    } else {
        let v = j - 10;
        ((2 * v, 4), (2 * v + 1, 4))
    }
}

/// Where conv2's pair `j` of channel `c` starts in the pair array, for output position (0, 0).
fn conv2_offset(c: usize, j: usize) -> usize {
    let ((ky, kx), _) = conv2_pair(j);
    let plane = c * S2 * S2 + ky * S2 + kx;
    if j < 10 { plane } else { VERTICAL + plane }
}

impl Dense {
    fn of(layer: &QLayer) -> Dense {
        let (stride, rows) = (layer.inputs().next_multiple_of(16), layer.outputs().next_multiple_of(4));
        let mut weight = vec![0i16; rows * stride];
        for o in 0..layer.outputs() {
            for (w, &v) in weight[o * stride..].iter_mut().zip(&layer.weight[o * layer.inputs()..][..layer.inputs()]) {
                *w = v as i16;
            }
        }
        Dense { stride, rows, weight }
    }
}

/// The multiply-add of 16 pairs of 16-bit values into 8 `i32` lanes: `acc + a0 b0 + a1 b1` in each.
trait MultiplyAdd {
    /// # Safety
    /// The CPU must have the instructions of the implementation.
    unsafe fn madd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;
}

struct Avx2;
impl MultiplyAdd for Avx2 {
    #[inline(always)]
    unsafe fn madd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: the caller was compiled with AVX2.
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)) }
    }
}

struct AvxVnni;
impl MultiplyAdd for AvxVnni {
    #[inline(always)]
    unsafe fn madd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: the caller was compiled with AVX-VNNI.
        unsafe { _mm256_dpwssd_avx_epi32(acc, a, b) }
    }
}

struct Avx512Vnni;
impl MultiplyAdd for Avx512Vnni {
    #[inline(always)]
    unsafe fn madd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: the caller was compiled with AVX-512 VNNI and VL.
        unsafe { _mm256_dpwssd_epi32(acc, a, b) }
    }
}

/// The scores and class of one image with `kernel`, or `None` when the network's convolutions have a
/// multiplier these kernels do not take (the caller then runs the plain engine).
///
/// # Safety
/// The CPU must have `kernel`'s instructions; `packed` must be `Packed::of(layers)`.
pub(crate) unsafe fn predict(
    kernel: Kernel,
    layers: &QLayers,
    packed: &Packed,
    pixels: &[u8],
    scores: &mut [i32],
) -> Option<usize> {
    let vector_requant = |l: &QLayer| l.requant.iter().all(|r| r.shift <= 0 && r.multiplier >= 0);
    if !(vector_requant(&layers.conv1) && vector_requant(&layers.conv2)) {
        return None;
    }
    assert!(pixels.len() == S1 * S1 && scores.len() == layers.output.outputs());
    if let (Kernel::Avx512Vnni, Some(quads)) = (kernel, &packed.quads) {
        // SAFETY: the caller checked the CPU; `quads` is of these layers, of `scores.len()` classes.
        unsafe { super::vnni::predict(quads, pixels, scores) };
        return Some(argmax(scores));
    }
    // SAFETY: the caller checked the CPU; the shapes are LeNet-5's (`Packed::of`) and were just checked.
    unsafe {
        match kernel {
            Kernel::Avx2 => predict_avx2(layers, packed, pixels, scores),
            Kernel::AvxVnni => predict_avx_vnni(layers, packed, pixels, scores),
            Kernel::Avx512Vnni => predict_avx512_vnni(layers, packed, pixels, scores),
        }
    }
    Some(argmax(scores))
}

/// The first of the highest scores.
pub(super) fn argmax(scores: &[i32]) -> usize {
    let mut best = 0;
    for (k, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = k;
        }
    }
    best
}

#[target_feature(enable = "avx2")]
unsafe fn predict_avx2(layers: &QLayers, packed: &Packed, pixels: &[u8], scores: &mut [i32]) {
    // SAFETY: as `predict`'s.
    unsafe { network::<Avx2>(layers, packed, pixels, scores) }
}

#[target_feature(enable = "avx2,avxvnni")]
unsafe fn predict_avx_vnni(layers: &QLayers, packed: &Packed, pixels: &[u8], scores: &mut [i32]) {
    // SAFETY: as `predict`'s.
    unsafe { network::<AvxVnni>(layers, packed, pixels, scores) }
}

#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
unsafe fn predict_avx512_vnni(layers: &QLayers, packed: &Packed, pixels: &[u8], scores: &mut [i32]) {
    // SAFETY: as `predict`'s.
    unsafe { network::<Avx512Vnni>(layers, packed, pixels, scores) }
}

/// The five layers, as [`QLayers::predict_portable`] computes them.
#[inline(always)]
unsafe fn network<M: MultiplyAdd>(layers: &QLayers, packed: &Packed, pixels: &[u8], scores: &mut [i32]) {
    let mut pool1 = [0u8; IN2 * S2 * S2];
    let mut pool2 = [0i16; 400];
    let mut hidden1 = [0i16; 128];
    let mut hidden2 = [0i16; 96];
    let relu = |r: Requant, acc: i32| r.apply(acc).clamp(0, 255) as i16;
    // SAFETY: the callers' conditions.
    unsafe {
        conv1::<M>(&layers.conv1, &packed.conv1, pixels, &mut pool1);
        conv2::<M>(&layers.conv2, &packed.conv2, &pool1, &mut pool2);
        dense::<M>(&packed.linear1, &pool2, |o, acc| {
            hidden1[o] = relu(layers.linear1.requant[o], layers.linear1.bias[o] + acc)
        });
        dense::<M>(&packed.linear2, &hidden1, |o, acc| {
            hidden2[o] = relu(layers.linear2.requant[o], layers.linear2.bias[o] + acc)
        });
        let output = &layers.output;
        dense::<M>(&packed.output, &hidden2, |o, acc| {
            if o < scores.len() {
                scores[o] = output.requant[o].apply(output.bias[o] + acc);
            }
        });
    }
}

/// `x * multiplier` rounded, then divided by `2^right` rounded, in each of eight lanes: [`Requant::apply`] for
/// a shift of `-right <= 0` and a `multiplier >= 0`. The high multiply `(x m + 2^30) >> 31` (64-bit) is
/// TFLite's truncating `(x m + nudge) / 2^31` for either sign of `x m`.
#[inline(always)]
unsafe fn requant(x: __m256i, multiplier: __m256i, right: __m256i) -> __m256i {
    // SAFETY: register operations only, in functions compiled with AVX2.
    unsafe {
        let half = _mm256_set1_epi64x(1 << 30);
        let even = _mm256_add_epi64(_mm256_mul_epi32(x, multiplier), half);
        let odd_x = _mm256_srli_epi64::<32>(x);
        let odd = _mm256_add_epi64(_mm256_mul_epi32(odd_x, _mm256_srli_epi64::<32>(multiplier)), half);
        // Bits 31..62 of each product: the even ones into the low halves, the odd ones into the high halves.
        let high = _mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64::<31>(even), _mm256_slli_epi64::<1>(odd));
        let one = _mm256_set1_epi32(1);
        let mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
        let remainder = _mm256_and_si256(high, mask);
        // `cmpgt` is -1 where true: subtracting it adds one.
        let negative = _mm256_cmpgt_epi32(_mm256_setzero_si256(), high);
        let threshold = _mm256_sub_epi32(_mm256_srai_epi32::<1>(mask), negative);
        _mm256_sub_epi32(_mm256_srav_epi32(high, right), _mm256_cmpgt_epi32(remainder, threshold))
    }
}

/// [`requant`] and ReLU with int8 saturation: a clamp to `0..=255`.
#[inline(always)]
unsafe fn relu_requant(x: __m256i, multiplier: __m256i, right: __m256i) -> __m256i {
    // SAFETY: as `requant`'s.
    unsafe {
        let r = requant(x, multiplier, right);
        _mm256_min_epi32(_mm256_max_epi32(r, _mm256_setzero_si256()), _mm256_set1_epi32(255))
    }
}

/// conv1 (padding 2) + ReLU + 2x2 average pool: pixels `(28, 28)` -> `out (6, 14, 14)`.
#[inline(always)]
unsafe fn conv1<M: MultiplyAdd>(layer: &QLayer, weights: &[i32], pixels: &[u8], out: &mut [u8]) {
    // The padded image's rows as pairs of neighbours; rows outside `live` are all zero and never read.
    let live_row = |y: &usize| pixels[y * S1..][..S1].iter().any(|&p| p != 0);
    let live = match ((0..S1).find(live_row), (0..S1).rev().find(live_row)) {
        (Some(first), Some(last)) => first + 2..last + 3,
        _ => 0..0,
    };
    let mut pairs = [[0i32; PW1]; PH1];
    for r in live.clone() {
        let mut row = [0i32; PW1 + 1];
        for (v, &p) in row[2..2 + S1].iter_mut().zip(&pixels[(r - 2) * S1..][..S1]) {
            *v = p as i32;
        }
        for (i, p) in pairs[r].iter_mut().enumerate() {
            *p = row[i] | row[i + 1] << 16;
        }
    }
    // Two conv rows, requantized, of each output: pooled when the second is done.
    let mut rows = [[[0i32; 32]; 2]; 6];
    // SAFETY: every load reads 8 pairs from at most index 8 x 3 + 2 x 2 = 28 of a 36-pair row.
    unsafe {
        for y in 0..S1 {
            let taps = live.start.saturating_sub(y).min(K)..live.end.saturating_sub(y).min(K);
            for o0 in [0, 3] {
                let mut acc = [[_mm256_setzero_si256(); 4]; 3];
                for (c, acc_c) in acc.iter_mut().enumerate() {
                    *acc_c = [_mm256_set1_epi32(layer.bias[o0 + c]); 4];
                }
                for ky in taps.clone() {
                    let row = pairs[y + ky].as_ptr();
                    for p in 0..3 {
                        let w: [__m256i; 3] =
                            std::array::from_fn(|c| _mm256_set1_epi32(weights[((o0 + c) * K + ky) * 3 + p]));
                        for q in 0..4 {
                            let v = _mm256_loadu_si256(row.add(8 * q + 2 * p).cast());
                            for (acc_c, w_c) in acc.iter_mut().zip(w) {
                                acc_c[q] = M::madd(acc_c[q], v, w_c);
                            }
                        }
                    }
                }
                for (c, acc_c) in acc.iter().enumerate() {
                    let Requant { multiplier, shift } = layer.requant[o0 + c];
                    let (m, right) = (_mm256_set1_epi32(multiplier), _mm256_set1_epi32(-shift));
                    for (q, &a) in acc_c.iter().enumerate() {
                        let dst = rows[o0 + c][y % 2][8 * q..].as_mut_ptr();
                        _mm256_storeu_si256(dst.cast(), relu_requant(a, m, right));
                    }
                }
            }
            if y % 2 == 1 {
                for (o, [top, bottom]) in rows.iter().enumerate() {
                    for x in 0..S2 {
                        let sum = top[2 * x] + top[2 * x + 1] + bottom[2 * x] + bottom[2 * x + 1];
                        out[(o * S2 + y / 2) * S2 + x] = ((sum + 2) >> 2) as u8;
                    }
                }
            }
        }
    }
}

/// conv2 + ReLU + 2x2 average pool: `input (6, 14, 14)` -> `out (16, 5, 5)`, widened to 16 bits for linear1.
#[inline(always)]
unsafe fn conv2<M: MultiplyAdd>(layer: &QLayer, weights: &[i32], input: &[u8], out: &mut [i16]) {
    // Horizontal pairs `(x, x + 1)`, then vertical pairs `(y, y + 1)`, of each plane (zero past its edge).
    let mut pairs = [0i32; 2 * VERTICAL];
    for (plane, rows) in input.chunks_exact(S2 * S2).enumerate() {
        for y in 0..S2 {
            // The row and the one below it, with a zero past each edge.
            let (mut row, mut below) = ([0i32; S2 + 1], [0i32; S2]);
            row.iter_mut().zip(&rows[y * S2..][..S2]).for_each(|(v, &p)| *v = p as i32);
            if y + 1 < S2 {
                below.iter_mut().zip(&rows[(y + 1) * S2..][..S2]).for_each(|(v, &p)| *v = p as i32);
            }
            let i = (plane * S2 + y) * S2;
            for x in 0..S2 {
                pairs[i + x] = row[x] | row[x + 1] << 16;
                pairs[VERTICAL + i + x] = row[x] | below[x] << 16;
            }
        }
    }
    let offsets: [[usize; CONV2_PAIRS]; IN2] = std::array::from_fn(|c| std::array::from_fn(|j| conv2_offset(c, j)));
    let multipliers: [i32; OUT2] = std::array::from_fn(|o| layer.requant[o].multiplier);
    let rights: [i32; OUT2] = std::array::from_fn(|o| -layer.requant[o].shift);
    // Five output positions of a row at a time: ten accumulators, each weight vector loaded serving five.
    const X: usize = 5;
    // SAFETY: the offsets plus a position stay inside the pair array (a pair's last read is at column x + 4 <= 13
    // and row y + 4 <= 13 of its plane); the weight vectors are inside `weights` (6 x 13 x 16).
    unsafe {
        let load = |v: &[i32]| _mm256_loadu_si256(v.as_ptr().cast());
        let bias = [load(&layer.bias[..8]), load(&layer.bias[8..])];
        let m = [load(&multipliers[..8]), load(&multipliers[8..])];
        let right = [load(&rights[..8]), load(&rights[8..])];
        let mut pooled = [[_mm256_setzero_si256(); 2]; 25];
        for y in 0..C2 {
            for x0 in [0, X] {
                let mut acc = [bias; X];
                for (c, offsets) in offsets.iter().enumerate() {
                    for (j, &offset) in offsets.iter().enumerate() {
                        let w = weights.as_ptr().add((c * CONV2_PAIRS + j) * OUT2);
                        let w = [_mm256_loadu_si256(w.cast()), _mm256_loadu_si256(w.add(8).cast())];
                        let input = pairs.as_ptr().add(offset + y * S2 + x0);
                        for (k, acc_k) in acc.iter_mut().enumerate() {
                            let v = _mm256_set1_epi32(*input.add(k));
                            acc_k[0] = M::madd(acc_k[0], v, w[0]);
                            acc_k[1] = M::madd(acc_k[1], v, w[1]);
                        }
                    }
                }
                for (k, acc_k) in acc.iter().enumerate() {
                    let p = &mut pooled[(y / 2) * 5 + (x0 + k) / 2];
                    for h in 0..2 {
                        p[h] = _mm256_add_epi32(p[h], relu_requant(acc_k[h], m[h], right[h]));
                    }
                }
            }
        }
        let mut sums = [[0i32; OUT2]; 25];
        for (s, p) in sums.iter_mut().zip(&pooled) {
            _mm256_storeu_si256(s.as_mut_ptr().cast(), p[0]);
            _mm256_storeu_si256(s.as_mut_ptr().add(8).cast(), p[1]);
        }
        for (position, s) in sums.iter().enumerate() {
            for (o, &sum) in s.iter().enumerate() {
                out[o * 25 + position] = ((sum + 2) >> 2) as i16;
            }
        }
    }
}

/// A linear layer: `sum(input * weight)` of each row (the bias not added) to `write(row, sum)`, for every row
/// of the padded weights (the caller ignores those past the layer's outputs). `input` holds `stride` values,
/// zero past the layer's inputs.
#[inline(always)]
unsafe fn dense<M: MultiplyAdd>(dense: &Dense, input: &[i16], mut write: impl FnMut(usize, i32)) {
    assert!(input.len() >= dense.stride && dense.weight.len() == dense.rows * dense.stride);
    // SAFETY: every load reads 16 values inside the input or a weight row (both `stride` long, a multiple of 16).
    unsafe {
        for r0 in (0..dense.rows).step_by(4) {
            let mut acc = [_mm256_setzero_si256(); 4];
            for i in (0..dense.stride).step_by(16) {
                let x = _mm256_loadu_si256(input.as_ptr().add(i).cast());
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let w = _mm256_loadu_si256(dense.weight.as_ptr().add((r0 + r) * dense.stride + i).cast());
                    *acc_r = M::madd(*acc_r, x, w);
                }
            }
            // Lanes summed: pairwise within each 128-bit half, twice, then the two halves.
            let q = _mm256_hadd_epi32(_mm256_hadd_epi32(acc[0], acc[1]), _mm256_hadd_epi32(acc[2], acc[3]));
            let s = _mm_add_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
            let mut sums = [0i32; 4];
            _mm_storeu_si128(sums.as_mut_ptr().cast(), s);
            for (r, &sum) in sums.iter().enumerate() {
                write(r0 + r, sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A layer of random weights in `-127..=127` (the extremes included), biases in `-bias..=bias`, and
    /// multipliers from 2^-20 to nearly 1 (shifts from -20 to 0).
    fn layer(rng: &mut Rng, outputs: usize, inputs: usize, bias: i64) -> QLayer {
        let weight = (0..outputs * inputs)
            .map(|i| match i % 17 {
                0 => 127,
                1 => -127,
                _ => (rng.below(255) as i32 - 127) as i8,
            })
            .collect();
        let bias = (0..outputs).map(|_| (rng.below(2 * bias as u64 + 1) as i64 - bias) as i32).collect();
        let requant =
            (0..outputs).map(|_| Requant::of(2f64.powf(-20.0 * rng.next_f32() as f64) * 0.999).unwrap()).collect();
        QLayer { weight, bias, requant }
    }

    fn network(seed: u64, classes: usize) -> QLayers {
        let mut rng = Rng::new(seed);
        QLayers::new([
            layer(&mut rng, 6, 25, 3000),
            layer(&mut rng, 16, 150, 30_000),
            layer(&mut rng, 120, 400, 50_000),
            layer(&mut rng, 84, 120, 20_000),
            layer(&mut rng, classes, 84, 10_000),
        ])
    }

    /// Images that reach every part of the kernels: blank, full white, one lit row at each edge, a lit column,
    /// and noise.
    fn images(rng: &mut Rng) -> Vec<[u8; 784]> {
        let mut all = vec![[0u8; 784], [255u8; 784]];
        for row in [0, 1, 13, 26, 27] {
            let mut image = [0u8; 784];
            image[row * 28..][..28].fill(255);
            all.push(image);
        }
        let mut column = [0u8; 784];
        (0..28).for_each(|y| column[y * 28 + 27] = 200);
        all.push(column);
        for _ in 0..20 {
            all.push(std::array::from_fn(|_| if rng.below(3) == 0 { 0 } else { rng.below(256) as u8 }));
        }
        all
    }

    #[test]
    fn every_kernel_this_cpu_has_gives_the_integers_of_the_plain_engine() {
        let kernels: Vec<Kernel> = Kernel::ALL.into_iter().filter(|k| k.cpu_has()).collect();
        assert!(kernels.is_empty() || kernels[0] == Kernel::Avx2);
        let mut rng = Rng::new(7);
        for (seed, classes) in [(1, 10), (2, 3), (3, 26), (4, 1000)] {
            let net = network(seed, classes);
            let packed = net.packed.as_ref().expect("LeNet-5's shapes");
            for image in images(&mut rng) {
                let mut want = vec![0i32; classes];
                let class = net.predict_portable(&image, &mut want);
                for &kernel in &kernels {
                    let mut got = vec![0i32; classes];
                    // SAFETY: the CPU has the kernel; `packed` is of `net`.
                    let predicted = unsafe { predict(kernel, &net, packed, &image, &mut got) };
                    assert_eq!((predicted, &got), (Some(class), &want), "{kernel:?}, {classes} classes");
                }
            }
        }
    }

    #[test]
    fn a_batch_of_images_gives_the_integers_of_one_image_at_a_time() {
        // Batches of every size up to the kernel's and past it, so that the last is partly filled.
        let mut rng = Rng::new(8);
        for (seed, classes) in [(9, 10), (10, 1000), (11, 3)] {
            let net = network(seed, classes);
            let images: Vec<u8> = (0..3).flat_map(|_| images(&mut rng)).flatten().collect();
            for n in [0, 1, 2, 7, 8, 9, 17, images.len() / 784] {
                let mut want = vec![0i32; n * classes];
                let want_classes: Vec<usize> = (0..n)
                    .map(|i| net.predict_portable(&images[i * 784..][..784], &mut want[i * classes..][..classes]))
                    .collect();
                let (mut got, mut got_classes) = (vec![0i32; n * classes], vec![0usize; n]);
                net.predict_batch(&images[..n * 784], &mut got, &mut got_classes);
                assert_eq!((got_classes, got), (want_classes, want), "{n} images, {classes} classes");
            }
        }
    }

    #[test]
    fn a_convolution_multiplier_of_1_or_more_runs_the_plain_engine() {
        let [conv1, mut conv2, linear1, linear2, output] = network(5, 10).all().map(|l| l.clone());
        conv2.requant[3] = Requant::of(1.5).unwrap();
        let net = QLayers::new([conv1, conv2, linear1, linear2, output]);
        let image = images(&mut Rng::new(1)).pop().unwrap();
        let (mut fast, mut plain) = ([0i32; 10], [0i32; 10]);
        if Kernel::Avx2.cpu_has() {
            // SAFETY: the CPU has AVX2; `packed` is of `net`.
            let packed = net.packed.as_ref().unwrap();
            assert_eq!(unsafe { predict(Kernel::Avx2, &net, packed, &image, &mut fast) }, None);
        }
        assert_eq!(net.predict(&image, &mut fast), net.predict_portable(&image, &mut plain));
        assert_eq!(fast, plain);
    }

    #[test]
    fn the_requantization_of_eight_lanes_is_the_scalar_one() {
        if !Kernel::Avx2.cpu_has() {
            return;
        }
        let mut rng = Rng::new(3);
        let mut values: Vec<i32> = vec![0, 1, -1, 2, -2, 3, -3, 1 << 24, -(1 << 24), i32::MAX, i32::MIN + 1, i32::MIN];
        values.extend((0..4000).map(|i| (rng.next_u64() as i32) >> (i % 31)));
        for chunk in values.chunks(8).filter(|c| c.len() == 8) {
            let requants: [Requant; 8] =
                std::array::from_fn(|_| Requant::of(2f64.powf(-31.0 * rng.next_f32() as f64) * 0.9999).unwrap());
            let want: [i32; 8] = std::array::from_fn(|i| requants[i].apply(chunk[i]));
            let mut got = [0i32; 8];
            // SAFETY: the CPU has AVX2; the loads and the store are of 8-lane arrays.
            unsafe { requant_lanes(chunk, &requants, &mut got) };
            assert_eq!(got, want, "{chunk:?} {requants:?}");
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn requant_lanes(x: &[i32], requants: &[Requant; 8], out: &mut [i32; 8]) {
        let m: [i32; 8] = std::array::from_fn(|i| requants[i].multiplier);
        let right: [i32; 8] = std::array::from_fn(|i| -requants[i].shift);
        // SAFETY: 8-lane loads and store of 8-value arrays.
        unsafe {
            let load = |v: &[i32]| _mm256_loadu_si256(v.as_ptr().cast());
            let r = requant(load(x), load(&m), load(&right));
            _mm256_storeu_si256(out.as_mut_ptr().cast(), r);
        }
    }
}
