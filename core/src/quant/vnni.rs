//! The int8 network with AVX-512 VNNI's `vpdpbusd` on 512-bit registers, tested against
//! [`QLayers::predict_portable`], whose integers it gives.
//!
//! `vpdpbusd` multiplies four `u8` activations by four `i8` weights and adds the four products into an `i32`
//! lane, sixteen lanes at once: 64 products an instruction, exactly (4 x 255 x 128 < 2^31; unlike AVX2's
//! `vpmaddubsw` nothing saturates on the way). Integer sums do not depend on their order, so any grouping of the
//! taps into fours gives the reference's sums. Each layer's taps are grouped as the input's layout makes cheap:
//!
//! Both convolutions group a channel's 25 taps as 7 quads where 6.25 would be exact: taps 0-3 of each kernel row,
//! column 4's rows 0-3, and tap (4, 4) alone.
//!
//! - conv1: the 16 lanes are 16 output columns (two vectors a row of 28). Each padded image row is held as
//!   quads of neighbours `p[x..x + 4]` and as column quads `p[r..r + 4][x]` (one `u32` a column, made in
//!   registers). Two output rows at a time, pooled in registers; a pair with no lit pixel under it is the bias's.
//! - conv2: the 16 lanes are the 16 output channels, and each output position broadcasts its input quads (the row
//!   quads read in place from the input plane, the column quads from a plane of them). The ten positions of a row
//!   share each weight vector; the pooled outputs are stored position-major (`(25, 16)`), and linear1's weights
//!   are packed in that order.
//! - The linear layers: the lanes are 16 outputs; each quad of inputs is broadcast against a vector of 16 rows'
//!   four weights, for a batch of images at once ([`predict_batch`]).
//! - Requantization: TFLite's fixed point on 16 lanes ([`requant`]), and with ReLU as one exact rounding in 64-bit
//!   lanes ([`rounding`]), for networks whose multipliers are all below 1 (shift <= 0, as calibration gives
//!   them); [`Packed::of`] declines any other, which then runs the AVX2 kernels or the plain engine.

use std::arch::x86_64::*;
use std::ops::Range;

use super::engine::{QLayer, QLayers};
use super::shape::{C2, IN2, K, OUT2, PH1, S1, S2};

/// Quads held of each padded row: one per output column 0..32, and past it those tap 4 reads (up to 36).
const QW1: usize = 48;
/// Either convolution's quads a channel: kernel rows 0-4 (taps 0-3), column 4's rows 0-3, and tap (4, 4).
const QUADS: usize = 7;
/// The bytes from one row of conv1's pooled output to the next: 14 and two unused, so that a row is one 16-byte
/// store and one load.
const ROW1: usize = 16;
/// conv1's pooled output `(6, 14, ROW1)`, with room for the last quad read past its end.
const POOL1_LEN: usize = IN2 * S2 * ROW1 + 16;

/// Four bytes as the `i32` lane `vpdpbusd` reads them, the first the lowest.
fn quad(bytes: [i8; 4]) -> i32 {
    i32::from_le_bytes(bytes.map(|b| b as u8))
}

/// A layer's bias and requantization, one lane an output, padded with zeros (a zero multiplier gives 0).
#[derive(Clone, Debug, PartialEq)]
struct Outputs {
    bias: Vec<i32>,
    multiplier: Vec<i32>,
    right: Vec<i32>,
    /// [`rounding`] of each output, for each 16 outputs the 8 even ones then the 8 odd ones (as [`relu_requant`]
    /// takes them).
    add: Vec<i64>,
    shift: Vec<i64>,
}

/// The requantization and ReLU of an `x >= 0` as one rounding: `min((x m + add) >> shift, 255)`.
///
/// TFLite rounds twice, `r = (h + half) >> right` with `h = (x m + 2^30) >> 31` and `half = 2^right / 2` (0
/// for `right = 0`), and for `a >= 0` and whole `half`, `((a >> 31) + half) >> right` is
/// `(a + half 2^31) >> (31 + right)` (a floor of a floor of a quotient is the floor of the whole quotient). So
/// `add = 2^30 + half 2^31` and `shift = 31 + right`; `x m + add < 2^62 + 2^61` never wraps.
fn rounding(right: i32) -> (i64, i64) {
    let half = if right > 0 { 1i64 << (right - 1) } else { 0 };
    ((1 << 30) + (half << 31), 31 + right as i64)
}

impl Outputs {
    /// `None` when a multiplier is 1 or more (a left shift), which [`requant`] does not do.
    fn of(layer: &QLayer, lanes: usize) -> Option<Outputs> {
        if layer.requant.iter().any(|r| r.shift > 0 || r.multiplier < 0) {
            return None;
        }
        let lanes = lanes.next_multiple_of(16);
        let padded = |v: Vec<i32>| v.into_iter().chain(std::iter::repeat(0)).take(lanes).collect::<Vec<_>>();
        let right = padded(layer.requant.iter().map(|r| -r.shift).collect());
        // Each 16 outputs' even lanes, then their odd ones.
        let by_parity = (0..lanes).map(|i| i / 16 * 16 + i % 16 % 8 * 2 + i % 16 / 8);
        let (add, shift) = by_parity.map(|i| rounding(right[i])).unzip();
        Some(Outputs {
            bias: padded(layer.bias.clone()),
            multiplier: padded(layer.requant.iter().map(|r| r.multiplier).collect()),
            right,
            add,
            shift,
        })
    }
}

/// A linear layer for these kernels: for each quad of inputs, 16 rows' four weights a vector, the rows padded
/// to a multiple of 16 and the inputs to a multiple of 4 with zero weights.
#[derive(Clone, Debug, PartialEq)]
struct Dense {
    quads: usize,
    groups: usize,
    /// `(quads, groups, 16)` quads of weights.
    weight: Vec<i32>,
    outputs: Outputs,
}

impl Dense {
    /// The layer, with its packed input `i` being its input `input_of(i)` (`None`: a padding input).
    fn of(layer: &QLayer, inputs: usize, input_of: impl Fn(usize) -> Option<usize>) -> Option<Dense> {
        let (quads, groups) = (inputs.div_ceil(4), layer.outputs().div_ceil(16));
        let mut weight = Vec::with_capacity(quads * groups * 16);
        for q in 0..quads {
            for row in 0..groups * 16 {
                let tap = |i: usize| match input_of(4 * q + i) {
                    Some(i) if row < layer.outputs() => layer.weight[row * layer.inputs() + i],
                    _ => 0,
                };
                weight.push(quad([tap(0), tap(1), tap(2), tap(3)]));
            }
        }
        Some(Dense { quads, groups, weight, outputs: Outputs::of(layer, groups * 16)? })
    }
}

/// The whole network packed for these kernels, once, when it is built.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Packed {
    /// conv1's weights `(6, QUADS)`: taps 0-3 of each kernel row, column 4's rows 0-3, and `(w44, 0, 0, 0)`.
    conv1: Vec<i32>,
    conv1_outputs: Outputs,
    /// conv1's pooled output, by channel, where no lit pixel is under it: its bias requantized.
    conv1_blank: [u8; 6],
    /// conv2's weights `(6 channels, 7 quads, 16 outputs)`.
    conv2: Vec<i32>,
    conv2_outputs: Outputs,
    linear1: Dense,
    linear2: Dense,
    output: Dense,
}

impl Packed {
    /// The network for these kernels, or `None` when a multiplier is 1 or more. The shapes must be LeNet-5's.
    pub(crate) fn of(layers: &QLayers) -> Option<Packed> {
        let w1 = |o: usize, ky: usize, kx: usize| layers.conv1.weight[o * K * K + ky * K + kx];
        let mut conv1 = Vec::with_capacity(6 * QUADS);
        for o in 0..6 {
            for ky in 0..K {
                conv1.push(quad([w1(o, ky, 0), w1(o, ky, 1), w1(o, ky, 2), w1(o, ky, 3)]));
            }
            conv1.push(quad([w1(o, 0, 4), w1(o, 1, 4), w1(o, 2, 4), w1(o, 3, 4)]));
            conv1.push(quad([w1(o, 4, 4), 0, 0, 0]));
        }
        let w2 =
            |o: usize, c: usize, ky: usize, kx: usize| layers.conv2.weight[o * IN2 * K * K + (c * K + ky) * K + kx];
        let mut conv2 = Vec::with_capacity(IN2 * QUADS * OUT2);
        for c in 0..IN2 {
            for j in 0..QUADS {
                for o in 0..OUT2 {
                    conv2.push(match j {
                        0..5 => quad([w2(o, c, j, 0), w2(o, c, j, 1), w2(o, c, j, 2), w2(o, c, j, 3)]),
                        5 => quad([w2(o, c, 0, 4), w2(o, c, 1, 4), w2(o, c, 2, 4), w2(o, c, 3, 4)]),
                        _ => quad([w2(o, c, 4, 4), 0, 0, 0]),
                    });
                }
            }
        }
        // conv2's pooled outputs are stored position-major: input `p * 16 + o` is the layer's `o * 25 + p`.
        let linear1 = Dense::of(&layers.linear1, 400, |i| Some(i % OUT2 * 25 + i / OUT2))?;
        let plain = |inputs: usize| move |i: usize| (i < inputs).then_some(i);
        Some(Packed {
            conv1,
            conv1_outputs: Outputs::of(&layers.conv1, 6)?,
            conv1_blank: std::array::from_fn(|c| {
                layers.conv1.requant[c].apply(layers.conv1.bias[c]).clamp(0, 255) as u8
            }),
            conv2,
            conv2_outputs: Outputs::of(&layers.conv2, OUT2)?,
            linear1,
            linear2: Dense::of(&layers.linear2, 120, plain(120))?,
            output: Dense::of(&layers.output, 84, plain(84))?,
        })
    }
}

/// Images taken through the network together by [`predict_batch`]: the linear layers' weights (linear1's are
/// 48 KB, as much as a core's L1 cache) are then read once for all of them instead of once an image.
pub(crate) const BATCH: usize = 8;

/// The scores of one image into `scores` (one per class).
///
/// # Safety
/// The CPU must have AVX-512 F and VNNI; `packed` must be `Packed::of` a LeNet-5 network of `scores.len()`
/// classes.
#[target_feature(enable = "avx512f,avx512vnni")]
pub(crate) unsafe fn predict(packed: &Packed, pixels: &[u8], scores: &mut [i32]) {
    // SAFETY: the caller's conditions.
    unsafe { network::<1>(packed, pixels, scores, None) }
}

/// The scores of 1 to [`BATCH`] images (`pixels`: 784 each) into `scores` (the classes of each in turn);
/// `next` is the image the caller takes after them, if any, fetched into the cache meanwhile.
///
/// # Safety
/// As [`predict`]'s, with `scores` holding the classes of every image.
#[target_feature(enable = "avx512f,avx512vnni")]
pub(crate) unsafe fn predict_batch(packed: &Packed, pixels: &[u8], scores: &mut [i32], next: Option<&[u8]>) {
    // SAFETY: the caller's conditions.
    unsafe { network::<BATCH>(packed, pixels, scores, next) }
}

/// `image`'s cache lines fetched ahead of its reads.
#[inline(always)]
fn prefetch(image: &[u8]) {
    for line in image.chunks(64) {
        // SAFETY: a prefetch reads nothing the program sees, and the address is inside `image`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
}

/// The five layers for up to `B` images; the linear layers take `B` at once (zero images past the given ones,
/// whose scores are not stored). `next`: as [`predict_batch`]'s.
#[inline(always)]
unsafe fn network<const B: usize>(packed: &Packed, pixels: &[u8], scores: &mut [i32], next: Option<&[u8]>) {
    let images = pixels.len() / (S1 * S1);
    assert!((1..=B).contains(&images) && pixels.len() == images * S1 * S1 && scores.len().is_multiple_of(images));
    let classes = scores.len() / images;
    assert!(classes <= packed.output.groups * 16);
    let mut pool2 = [[0u8; 400]; B];
    let mut hidden1 = [[0u8; 128]; B];
    let mut hidden2 = [[0u8; 96]; B];
    // SAFETY: the caller's conditions; the buffers are the sizes the layers read and write.
    unsafe {
        // conv1 writes every row of it for each image; the tail past them stays zero.
        let mut pool1 = [0u8; POOL1_LEN];
        for (b, (image, pool2)) in pixels.chunks_exact(S1 * S1).zip(pool2.iter_mut()).enumerate() {
            // The next image into the cache while this one is computed (its first reads waited for memory).
            if let Some(next) = pixels.get((b + 1) * S1 * S1..(b + 2) * S1 * S1).or(next) {
                prefetch(next);
            }
            conv1(packed, image, &mut pool1);
            conv2(packed, &pool1, pool2);
        }
        dense::<B>(&packed.linear1, pool2.each_ref().map(|p| p.as_ptr()), Sink::Relu(hidden1.as_flattened_mut(), 128));
        dense::<B>(&packed.linear2, hidden1.each_ref().map(|p| p.as_ptr()), Sink::Relu(hidden2.as_flattened_mut(), 96));
        dense::<B>(&packed.output, hidden2.each_ref().map(|p| p.as_ptr()), Sink::Scores(scores, classes));
    }
}

/// Where a linear layer's requantized outputs go, each image's `stride` after the one before.
enum Sink<'a> {
    /// Through ReLU with int8 saturation, as bytes (room for every padded row).
    Relu(&'a mut [u8], usize),
    /// As they are, one per class, for the images the slice has room for.
    Scores(&'a mut [i32], usize),
}

/// The first 16 values of `v`.
#[inline(always)]
unsafe fn load(v: &[i32]) -> __m512i {
    assert!(v.len() >= 16);
    // SAFETY: 16 values inside `v`.
    unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
}

/// The first 16 values of `v` as two vectors of 8.
#[inline(always)]
unsafe fn load_pair(v: &[i64]) -> [__m512i; 2] {
    assert!(v.len() >= 16);
    // SAFETY: 16 values inside `v`.
    unsafe { [_mm512_loadu_si512(v.as_ptr().cast()), _mm512_loadu_si512(v.as_ptr().add(8).cast())] }
}

/// The quads `(a, b, c, d)` of four vectors of bytes (one a lane).
#[inline(always)]
unsafe fn stack(a: __m512i, b: __m512i, c: __m512i, d: __m512i) -> __m512i {
    // SAFETY: register operations, in functions compiled with AVX-512 F.
    unsafe {
        let ab = _mm512_or_si512(a, _mm512_slli_epi32::<8>(b));
        let cd = _mm512_or_si512(_mm512_slli_epi32::<16>(c), _mm512_slli_epi32::<24>(d));
        _mm512_or_si512(ab, cd)
    }
}

/// The quads `bytes[x..x + 4]` of 16 columns, from their bytes (one a lane) and the 16 after them.
#[inline(always)]
unsafe fn quads_of(bytes: __m512i, next: __m512i) -> __m512i {
    // SAFETY: register operations, in functions compiled with AVX-512 F.
    unsafe {
        let second = _mm512_alignr_epi32::<1>(next, bytes);
        let third = _mm512_alignr_epi32::<2>(next, bytes);
        stack(bytes, second, third, _mm512_alignr_epi32::<3>(next, bytes))
    }
}

/// Bytes `at..at + 16` of conv2's input.
#[inline(always)]
unsafe fn load_row(input: &[u8; POOL1_LEN], at: usize) -> __m128i {
    assert!(at + 16 <= POOL1_LEN);
    // SAFETY: 16 bytes inside `input`.
    unsafe { _mm_loadu_si128(input.as_ptr().add(at).cast()) }
}

/// The four bytes at `p` in every lane.
#[inline(always)]
unsafe fn broadcast(p: *const u8) -> __m512i {
    // SAFETY: the caller's: four readable bytes at `p`.
    unsafe { _mm512_set1_epi32(p.cast::<i32>().read_unaligned()) }
}

/// `x * multiplier` rounded, then divided by `2^right` rounded, in each of 16 lanes: [`Requant::apply`](super::fixed::Requant::apply) for a
/// shift of `-right <= 0` and a `multiplier >= 0`, as the AVX2 kernels' eight-lane one computes it.
#[inline(always)]
unsafe fn requant(x: __m512i, multiplier: __m512i, right: __m512i) -> __m512i {
    // SAFETY: register operations, in functions compiled with AVX-512 F.
    unsafe {
        let half = _mm512_set1_epi64(1 << 30);
        let even = _mm512_add_epi64(_mm512_mul_epi32(x, multiplier), half);
        let odd_x = _mm512_srli_epi64::<32>(x);
        let odd = _mm512_add_epi64(_mm512_mul_epi32(odd_x, _mm512_srli_epi64::<32>(multiplier)), half);
        // Bits 31..62 of each product: the even ones into the low halves, the odd ones into the high halves.
        let high = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64::<31>(even), _mm512_slli_epi64::<1>(odd));
        let one = _mm512_set1_epi32(1);
        let mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, right), one);
        let remainder = _mm512_and_si512(high, mask);
        let half_mask = _mm512_srai_epi32::<1>(mask);
        let negative = _mm512_cmplt_epi32_mask(high, _mm512_setzero_si512());
        let threshold = _mm512_mask_add_epi32(half_mask, negative, half_mask, one);
        let shifted = _mm512_srav_epi32(high, right);
        _mm512_mask_add_epi32(shifted, _mm512_cmpgt_epi32_mask(remainder, threshold), shifted, one)
    }
}

/// [`requant`] and ReLU with int8 saturation (a clamp to `0..=255`) of 16 lanes: [`rounding`] in each, the even
/// lanes' products in one vector of 64-bit lanes and the odd ones' in another. `add` and `shift` are
/// [`Outputs`]' (even lanes, then odd), `multiplier` each lane's multiplier. A negative `x` gives 0 either way,
/// so only `max(x, 0)` is requantized.
#[inline(always)]
unsafe fn relu_requant(x: __m512i, multiplier: __m512i, add: [__m512i; 2], shift: [__m512i; 2]) -> __m512i {
    // SAFETY: register operations, in functions compiled with AVX-512 F.
    unsafe {
        let x = _mm512_max_epi32(x, _mm512_setzero_si512());
        let even = _mm512_srlv_epi64(_mm512_add_epi64(_mm512_mul_epu32(x, multiplier), add[0]), shift[0]);
        let odd_product = _mm512_mul_epu32(_mm512_srli_epi64::<32>(x), _mm512_srli_epi64::<32>(multiplier));
        let odd = _mm512_srlv_epi64(_mm512_add_epi64(odd_product, add[1]), shift[1]);
        _mm512_min_epu32(_mm512_or_si512(even, _mm512_slli_epi64::<32>(odd)), _mm512_set1_epi32(255))
    }
}

/// [`relu_requant`] of one multiplier, with each 64-bit lane's result left in it: `(even, odd)`, the lanes'
/// values in `0..=255`.
#[inline(always)]
unsafe fn relu_requant_qwords(x: __m512i, multiplier: __m512i, add: __m512i, shift: __m512i) -> [__m512i; 2] {
    // SAFETY: register operations, in functions compiled with AVX-512 F.
    unsafe {
        let x = _mm512_max_epi32(x, _mm512_setzero_si512());
        let max = _mm512_set1_epi64(255);
        let even = _mm512_srlv_epi64(_mm512_add_epi64(_mm512_mul_epu32(x, multiplier), add), shift);
        let odd_product = _mm512_mul_epu32(_mm512_srli_epi64::<32>(x), multiplier);
        let odd = _mm512_srlv_epi64(_mm512_add_epi64(odd_product, add), shift);
        [_mm512_min_epu64(even, max), _mm512_min_epu64(odd, max)]
    }
}

/// conv1 (padding 2) + ReLU + 2x2 average pool: pixels `(28, 28)` -> `out (6, 14, 14)` (and 16 bytes past it
/// that may be written).
#[inline(always)]
unsafe fn conv1(packed: &Packed, pixels: &[u8], out: &mut [u8; POOL1_LEN]) {
    // Rows of the padded image that hold a lit pixel; the others add nothing and are skipped.
    let live_row = |y: &usize| {
        let row = &pixels[y * S1..][..S1];
        let word = |i: usize| u64::from_le_bytes(row[i..i + 8].try_into().unwrap());
        word(0) | word(8) | word(16) | word(20) != 0
    };
    let live = match ((0..S1).find(live_row), (0..S1).rev().find(live_row)) {
        (Some(first), Some(last)) => first + 2..last + 3,
        _ => 0..0,
    };
    // Only the rows that are read are made: the others are never written (12 KB to zero for each image).
    let mut quads = std::mem::MaybeUninit::<[[i32; QW1]; PH1]>::uninit();
    let mut columns = std::mem::MaybeUninit::<[[i32; QW1]; PH1]>::uninit();
    let (rows, columns) = (quads.as_mut_ptr().cast::<i32>(), columns.as_mut_ptr().cast::<i32>());
    // SAFETY: the loads read bytes 0..16 and 12..28 of an image row; the stores write quad or column row r's 48,
    // r < 32.
    unsafe {
        let zero = _mm512_setzero_si512();
        // The padded rows r - 3..=r, a byte a lane: columns 0..16 and 16..32 (zero past the live rows).
        let mut window = [[zero; 2]; 4];
        let first_column = live.start.saturating_sub(3);
        for r in first_column..live.end + 3 {
            let bytes = if live.contains(&r) {
                // Two zeros, then pixels 0..14; pixels 14..28, then two zeros: made in registers (a row copied
                // into memory and read back at other offsets would wait for each store).
                let pixels = pixels[(r - 2) * S1..][..S1].as_ptr();
                let first = _mm512_cvtepu8_epi32(_mm_loadu_si128(pixels.cast()));
                let last = _mm512_cvtepu8_epi32(_mm_loadu_si128(pixels.add(S1 - 16).cast()));
                let (low, high) = (_mm512_alignr_epi32::<14>(first, zero), _mm512_alignr_epi32::<2>(zero, last));
                _mm512_storeu_si512(rows.add(r * QW1).cast(), quads_of(low, high));
                _mm512_storeu_si512(rows.add(r * QW1 + 16).cast(), quads_of(high, zero));
                _mm512_storeu_si512(rows.add(r * QW1 + 32).cast(), zero);
                [low, high]
            } else {
                [zero; 2]
            };
            window = [window[1], window[2], window[3], bytes];
            if r >= first_column + 3 {
                // Column quads `(p[r - 3][x], .., p[r][x])` of the output row r - 3.
                let to = columns.add((r - 3) * QW1);
                let [first, second, third, fourth] = window;
                _mm512_storeu_si512(to.cast(), stack(first[0], second[0], third[0], fourth[0]));
                _mm512_storeu_si512(to.add(16).cast(), stack(first[1], second[1], third[1], fourth[1]));
                _mm512_storeu_si512(to.add(32).cast(), zero);
            }
        }
    }
    let o = &packed.conv1_outputs;
    // SAFETY: the output rows' loads and stores are as `conv1_row` and below say.
    unsafe {
        for y in (0..S1).step_by(2) {
            if live.is_empty() || y + K < live.start || y >= live.end {
                // No lit pixel under either row: every output is the bias's, and so is their pool.
                for (c, &blank) in packed.conv1_blank.iter().enumerate() {
                    _mm_storeu_si128(out.as_mut_ptr().add((c * S2 + y / 2) * ROW1).cast(), _mm_set1_epi8(blank as i8));
                }
                continue;
            }
            let [top, bottom] = [
                conv1_row(packed, rows, columns, y, live.clone()),
                conv1_row(packed, rows, columns, y + 1, live.clone()),
            ];
            for (c, (top, bottom)) in top.iter().zip(&bottom).enumerate() {
                let (add, shift) = rounding(o.right[c]);
                let m = _mm512_set1_epi64(o.multiplier[c] as i64);
                let (add, shift) = (_mm512_set1_epi64(add), _mm512_set1_epi64(shift));
                let mut halves = [_mm_setzero_si128(); 2];
                for (h, half) in halves.iter_mut().enumerate() {
                    // Each 64-bit lane holds columns 2x and 2x + 1 (x = 8h..8h + 8): the pool's four in two rows.
                    let [top_even, top_odd] = relu_requant_qwords(top[h], m, add, shift);
                    let [bottom_even, bottom_odd] = relu_requant_qwords(bottom[h], m, add, shift);
                    let sum = _mm512_add_epi64(
                        _mm512_add_epi64(top_even, top_odd),
                        _mm512_add_epi64(bottom_even, bottom_odd),
                    );
                    *half = _mm512_cvtepi64_epi8(_mm512_srli_epi64::<2>(_mm512_add_epi64(sum, _mm512_set1_epi64(2))));
                }
                // Pooled row y / 2: 14 columns and two unused.
                let to = out.as_mut_ptr().add((c * S2 + y / 2) * ROW1);
                _mm_storeu_si128(to.cast(), _mm_unpacklo_epi64(halves[0], halves[1]));
            }
        }
    }
}

/// conv1's accumulators of output row `y` (bias included): `(6 channels, 2 vectors of 16 columns)`, from the
/// padded rows in `live` (the others are zero): their row quads `QW1` apart from `quads`, and the column quads
/// of rows `y..y + 4` at row `y` of `columns` (made where any of those rows is live).
#[inline(always)]
unsafe fn conv1_row(
    packed: &Packed,
    quads: *const i32,
    columns: *const i32,
    y: usize,
    live: Range<usize>,
) -> [[__m512i; 2]; 6] {
    let o = &packed.conv1_outputs;
    assert!(packed.conv1.len() == 6 * QUADS);
    // SAFETY: the loads read 16 quads from column 0, 4, 16 or 20 of a row the caller made; the weights are
    // inside `conv1`.
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); 2]; 6];
        for (c, acc_c) in acc.iter_mut().enumerate() {
            *acc_c = [_mm512_set1_epi32(o.bias[c]); 2];
        }
        for ky in live.start.saturating_sub(y).min(K)..live.end.saturating_sub(y).min(K) {
            acc = conv1_taps(packed, acc, halves(quads.add((y + ky) * QW1), 0), ky);
        }
        if y + 3 >= live.start && y < live.end {
            acc = conv1_taps(packed, acc, halves(columns.add(y * QW1), 4), K);
        }
        if live.contains(&(y + 4)) {
            acc = conv1_taps(packed, acc, halves(quads.add((y + 4) * QW1), 4), K + 1);
        }
        acc
    }
}

/// The 32 quads of a row of conv1's quads from `column`, as two vectors.
#[inline(always)]
unsafe fn halves(row: *const i32, column: usize) -> [__m512i; 2] {
    // SAFETY: the caller's: 32 quads readable there.
    unsafe { [_mm512_loadu_si512(row.add(column).cast()), _mm512_loadu_si512(row.add(column + 16).cast())] }
}

/// `acc + v . w` for each channel's weight quad `j`, both halves of the row.
#[inline(always)]
unsafe fn conv1_taps(packed: &Packed, mut acc: [[__m512i; 2]; 6], v: [__m512i; 2], j: usize) -> [[__m512i; 2]; 6] {
    // SAFETY: the weight is inside `conv1` (6 x QUADS, asserted by the caller); register operations.
    unsafe {
        for (c, acc_c) in acc.iter_mut().enumerate() {
            let w = _mm512_set1_epi32(*packed.conv1.as_ptr().add(c * QUADS + j));
            acc_c[0] = _mm512_dpbusd_epi32(acc_c[0], v[0], w);
            acc_c[1] = _mm512_dpbusd_epi32(acc_c[1], v[1], w);
        }
    }
    acc
}

/// conv2 + ReLU + 2x2 average pool: `input (6, 14, 14)` -> `out (25, 16)`, position-major.
#[inline(always)]
unsafe fn conv2(packed: &Packed, input: &[u8; POOL1_LEN], out: &mut [u8; 400]) {
    // Column quads: `input[c][y..y + 4][x]` for the rows y an output row starts at.
    let mut columns = std::mem::MaybeUninit::<[i32; IN2 * C2 * S2 + 2]>::uninit();
    // SAFETY: each of the four rows' loads reads one row (at most row 12 of a plane) of `input`; each store writes
    // 16 quads from entry (c x 10 + y) x 14, inside `columns`, the last two rewritten by the next row's: every
    // entry is written, the last by the last row's store.
    let columns = unsafe {
        for c in 0..IN2 {
            for y in 0..C2 {
                let (r0, r1, r2, r3) = (
                    load_row(input, (c * S2 + y) * ROW1),
                    load_row(input, (c * S2 + y + 1) * ROW1),
                    load_row(input, (c * S2 + y + 2) * ROW1),
                    load_row(input, (c * S2 + y + 3) * ROW1),
                );
                let (low01, low23) = (_mm_unpacklo_epi8(r0, r1), _mm_unpacklo_epi8(r2, r3));
                let (high01, high23) = (_mm_unpackhi_epi8(r0, r1), _mm_unpackhi_epi8(r2, r3));
                let to = columns.as_mut_ptr().cast::<i32>().add((c * C2 + y) * S2);
                _mm_storeu_si128(to.cast(), _mm_unpacklo_epi16(low01, low23));
                _mm_storeu_si128(to.add(4).cast(), _mm_unpackhi_epi16(low01, low23));
                _mm_storeu_si128(to.add(8).cast(), _mm_unpacklo_epi16(high01, high23));
                _mm_storeu_si128(to.add(12).cast(), _mm_unpackhi_epi16(high01, high23));
            }
        }
        columns.assume_init()
    };
    // SAFETY: as `conv2_row`'s; each store writes 16 bytes of `out`'s 400.
    unsafe {
        for py in 0..C2 / 2 {
            let rows = [conv2_row(packed, input, &columns, 2 * py), conv2_row(packed, input, &columns, 2 * py + 1)];
            for px in 0..C2 / 2 {
                let sum = _mm512_add_epi32(
                    _mm512_add_epi32(rows[0][2 * px], rows[0][2 * px + 1]),
                    _mm512_add_epi32(rows[1][2 * px], rows[1][2 * px + 1]),
                );
                let pooled = _mm512_srli_epi32::<2>(_mm512_add_epi32(sum, _mm512_set1_epi32(2)));
                let to = out.as_mut_ptr().add((py * 5 + px) * OUT2);
                _mm_storeu_si128(to.cast(), _mm512_cvtepi32_epi8(pooled));
            }
        }
    }
}

/// conv2's output row `y` after ReLU: 10 positions of 16 channels.
#[inline(always)]
unsafe fn conv2_row(
    packed: &Packed,
    input: &[u8; POOL1_LEN],
    columns: &[i32; IN2 * C2 * S2 + 2],
    y: usize,
) -> [__m512i; C2] {
    let o = &packed.conv2_outputs;
    // SAFETY: the input quads start at most at byte (5 x 14 + 13) x 16 + 13 of 1344 + 16 (the bytes past a row's
    // 14 meet zero weights); the column quads at (5 x 10 + 9) x 14 + 13; the weights are 6 x 7 x 16.
    unsafe {
        assert!(packed.conv2.len() == IN2 * QUADS * OUT2);
        let mut acc = [load(&o.bias); C2];
        for c in 0..IN2 {
            let plane = input.as_ptr().add(c * S2 * ROW1);
            let weights = packed.conv2.as_ptr().add(c * QUADS * OUT2);
            for ky in 0..K {
                acc = row_taps::<1>(acc, plane.add((y + ky) * ROW1), weights.add(ky * OUT2));
            }
            let column = columns.as_ptr().add((c * C2 + y) * S2 + 4).cast::<u8>();
            acc = row_taps::<4>(acc, column, weights.add(5 * OUT2));
            acc = row_taps::<1>(acc, plane.add((y + 4) * ROW1 + 4), weights.add(6 * OUT2));
        }
        let m = load(&o.multiplier);
        let (add, shift) = (load_pair(&o.add), load_pair(&o.shift));
        for a in acc.iter_mut() {
            *a = relu_requant(*a, m, add, shift);
        }
        acc
    }
}

/// `acc[x] += quad(first + STRIDE x) . weights` for the 10 positions of a conv2 row.
#[inline(always)]
unsafe fn row_taps<const STRIDE: usize>(
    mut acc: [__m512i; C2],
    first: *const u8,
    weights: *const i32,
) -> [__m512i; C2] {
    // SAFETY: the caller's: 10 quads readable at `first`, 16 weights at `weights`.
    unsafe {
        let w = _mm512_loadu_si512(weights.cast());
        for (x, acc_x) in acc.iter_mut().enumerate() {
            *acc_x = _mm512_dpbusd_epi32(*acc_x, broadcast(first.add(x * STRIDE)), w);
        }
    }
    acc
}

/// A linear layer of `B` images: `bias + sum(input * weight)` of each row, requantized, into `sink`. Each input
/// holds at least `4 x quads` bytes (zero weights past the layer's inputs).
#[inline(always)]
unsafe fn dense<const B: usize>(dense: &Dense, inputs: [*const u8; B], mut sink: Sink) {
    assert!(dense.weight.len() == dense.quads * dense.groups * 16);
    match &sink {
        Sink::Relu(out, stride) => assert!(*stride >= 16 * dense.groups && out.len() >= B * stride),
        Sink::Scores(_, classes) => assert!(*classes <= 16 * dense.groups),
    }
    // A fixed number of accumulators, which stay in registers: eight groups (128 rows) at a time for one image,
    // two for a batch, then what is left.
    let mut g = 0;
    while g < dense.groups {
        // SAFETY: the groups are inside the layer's; the inputs are the caller's.
        unsafe {
            g += match (B, dense.groups - g) {
                (1, 8..) => dense_groups::<B, 8>(dense, &inputs, g, &mut sink),
                (1, 4..) => dense_groups::<B, 4>(dense, &inputs, g, &mut sink),
                (_, 2..) => dense_groups::<B, 2>(dense, &inputs, g, &mut sink),
                _ => dense_groups::<B, 1>(dense, &inputs, g, &mut sink),
            };
        }
    }
}

/// [`dense`] of groups `g0..g0 + G`; returns `G`.
#[inline(always)]
unsafe fn dense_groups<const B: usize, const G: usize>(
    dense: &Dense,
    inputs: &[*const u8; B],
    g0: usize,
    sink: &mut Sink,
) -> usize {
    let o = &dense.outputs;
    // SAFETY: the quads read are inside the inputs (the caller's); the weight vectors inside `weight`, the outputs'
    // inside their `groups x 16` arrays, and the stores inside `sink` (asserted by `dense`).
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); G]; B];
        assert!(g0 + G <= dense.groups);
        let weights = dense.weight.as_ptr().add(g0 * 16);
        for q in 0..dense.quads {
            let mut w = [_mm512_setzero_si512(); G];
            for (g, w) in w.iter_mut().enumerate() {
                *w = _mm512_loadu_si512(weights.add((q * dense.groups + g) * 16).cast());
            }
            for (acc_b, input) in acc.iter_mut().zip(inputs) {
                let v = broadcast(input.add(4 * q));
                for (acc_g, &w) in acc_b.iter_mut().zip(&w) {
                    *acc_g = _mm512_dpbusd_epi32(*acc_g, v, w);
                }
            }
        }
        for g in 0..G {
            let lanes = 16 * (g0 + g);
            let (bias, m, right) = (load(&o.bias[lanes..]), load(&o.multiplier[lanes..]), load(&o.right[lanes..]));
            for (b, acc_b) in acc.iter().enumerate() {
                let sum = _mm512_add_epi32(acc_b[g], bias);
                match sink {
                    Sink::Relu(out, stride) => {
                        let (add, shift) = (load_pair(&o.add[lanes..]), load_pair(&o.shift[lanes..]));
                        let v = _mm512_cvtepi32_epi8(relu_requant(sum, m, add, shift));
                        _mm_storeu_si128(out.as_mut_ptr().add(b * *stride + lanes).cast(), v)
                    }
                    Sink::Scores(out, classes) if (b + 1) * *classes <= out.len() => {
                        let k = (*classes - lanes.min(*classes)).min(16);
                        let to = out.as_mut_ptr().add(b * *classes + lanes.min(*classes));
                        _mm512_mask_storeu_epi32(to, ((1u32 << k) - 1) as u16, requant(sum, m, right))
                    }
                    Sink::Scores(..) => {}
                }
            }
        }
    }
    G
}

#[cfg(test)]
mod tests {
    use super::super::fixed::Requant;
    use super::*;
    use crate::rng::Rng;

    fn cpu_has() -> bool {
        super::super::avx2::Kernel::Avx512Vnni.cpu_has()
    }

    #[test]
    fn the_requantization_of_16_lanes_is_the_scalar_one_with_and_without_relu() {
        if !cpu_has() {
            return;
        }
        let mut rng = Rng::new(5);
        let mut values: Vec<i32> = vec![0, 1, -1, 2, -2, 3, -3, 1 << 24, -(1 << 24), i32::MAX, i32::MIN + 1, i32::MIN];
        values.extend((0..8000).map(|i| (rng.next_u64() as i32) >> (i % 31)));
        for chunk in values.chunks(16).filter(|c| c.len() == 16) {
            let requants: [Requant; 16] = std::array::from_fn(|i| match i {
                0 => Requant { multiplier: 0, shift: 0 },
                1 => Requant { multiplier: i32::MAX, shift: 0 },
                2 => Requant { multiplier: 1 << 30, shift: -31 },
                _ => Requant::of(2f64.powf(-31.0 * rng.next_f32() as f64) * 0.9999).unwrap(),
            });
            let want: [i32; 16] = std::array::from_fn(|i| requants[i].apply(chunk[i]));
            let want_relu = want.map(|v| v.clamp(0, 255));
            let x: [i32; 16] = chunk.try_into().unwrap();
            // SAFETY: the CPU has AVX-512 F.
            let (got, got_relu) = unsafe { lanes(&x, &requants) };
            assert_eq!((got, got_relu), (want, want_relu), "{chunk:?} {requants:?}");
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn lanes(x: &[i32; 16], requants: &[Requant; 16]) -> ([i32; 16], [i32; 16]) {
        let m: [i32; 16] = std::array::from_fn(|i| requants[i].multiplier);
        let right: [i32; 16] = std::array::from_fn(|i| -requants[i].shift);
        let layer = QLayer { weight: vec![0; 16], bias: vec![0; 16], requant: requants.to_vec() };
        let outputs = Outputs::of(&layer, 16).unwrap();
        let (mut plain, mut relu, mut even, mut odd) = ([0i32; 16], [0i32; 16], [0i64; 8], [0i64; 8]);
        // SAFETY: 16-lane loads and stores of 16-value arrays, 8-lane ones of 8-value arrays.
        unsafe {
            let (x, m, right) = (load(x), load(&m), load(&right));
            _mm512_storeu_si512(plain.as_mut_ptr().cast(), requant(x, m, right));
            let (add, shift) = (load_pair(&outputs.add), load_pair(&outputs.shift));
            _mm512_storeu_si512(relu.as_mut_ptr().cast(), relu_requant(x, m, add, shift));
            // The same lanes one multiplier at a time, as conv1 takes them: each must give relu_requant's lane.
            for (lane, r) in requants.iter().enumerate() {
                let (add, shift) = rounding(-r.shift);
                let (add, shift) = (_mm512_set1_epi64(add), _mm512_set1_epi64(shift));
                let [e, o] = relu_requant_qwords(x, _mm512_set1_epi64(r.multiplier as i64), add, shift);
                _mm512_storeu_si512(even.as_mut_ptr().cast(), e);
                _mm512_storeu_si512(odd.as_mut_ptr().cast(), o);
                let got = if lane % 2 == 0 { even[lane / 2] } else { odd[lane / 2] };
                assert_eq!(got, relu[lane] as i64, "lane {lane}: {r:?}");
            }
        }
        (plain, relu)
    }

    #[test]
    fn a_multiplier_of_1_or_more_is_declined() {
        let layer = |outputs: usize, inputs: usize| QLayer {
            weight: vec![1; outputs * inputs],
            bias: vec![0; outputs],
            requant: vec![Requant::of(0.5).unwrap(); outputs],
        };
        let layers = || [layer(6, 25), layer(16, 150), layer(120, 400), layer(84, 120), layer(10, 84)];
        assert!(Packed::of(&QLayers::new(layers())).is_some());
        for l in 0..5 {
            let mut bad = layers();
            bad[l].requant[1] = Requant::of(1.5).unwrap();
            assert!(Packed::of(&QLayers::new(bad)).is_none(), "layer {l}");
        }
    }
}
