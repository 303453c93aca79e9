use super::*;
use crate::nn::conv::{conv2d_backward, conv2d_forward, image_major};
use crate::nn::model::CONV1;
use crate::rng::Rng;

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

fn assert_close(a: &[f32], b: &[f32]) {
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

/// Random images, some with blank rows: image 0 none, 1 its first six, 2 its last nine, 3 all of them, 4
/// all but row 13, 5 its first and last (and a blank row in the middle, which the kernels do not skip).
fn images_with_blank_rows(rng: &mut Rng) -> Vec<f32> {
    let mut input = random(rng, 6 * S * S);
    let blank: [&[usize]; 6] =
        [&[], &[0, 1, 2, 3, 4, 5], &[19, 20, 21, 22, 23, 24, 25, 26, 27], &[], &[], &[0, 14, 27]];
    for (b, img) in input.chunks_exact_mut(S * S).enumerate() {
        for (y, row) in img.chunks_exact_mut(S).enumerate() {
            if blank[b].contains(&y) || b == 3 || (b == 4 && y != 13) {
                row.fill(0.0);
            }
        }
    }
    input
}

#[test]
fn live_rows_are_the_rows_between_the_first_and_last_nonzero_ones() {
    let input = images_with_blank_rows(&mut Rng::new(3));
    let mut padded = PaddedImages::new(6);
    padded.fill(6, &input);
    let want = [(2, 30), (8, 30), (2, 21), (0, 0), (15, 16), (3, 29)];
    for (live, (start, end)) in padded.live.iter().zip(want) {
        assert_eq!(*live, LiveRows { start, end });
    }
    // Image 4 (row 13 only, padded row 15): output row 13 meets it with kernel row 2, row 11 with row 4.
    let live = padded.live[4];
    assert_eq!((live.taps(13), live.taps(11), live.taps(10), live.taps(16)), (2..3, 4..5, 5..5, 0..0));
    assert_eq!((live.outputs(0), live.outputs(4)), (15..16, 11..12));
    assert_eq!(padded.live[3].taps(5), 0..0);

    // A row of negative zeros is blank; a NaN is not.
    let mut img = vec![0.0f32; S * S];
    img[5 * S..6 * S].fill(-0.0);
    img[20 * S + 7] = f32::NAN;
    padded.fill(1, &img);
    assert_eq!(padded.live[0], LiveRows { start: 22, end: 23 });
}

#[test]
fn matches_im2col_gemm_forward_and_backward() {
    assert!(supports(&CONV1));
    let d = CONV1;
    let n = 6;
    let mut rng = Rng::new(9);
    let input = images_with_blank_rows(&mut rng);
    let weight = random(&mut rng, d.weight_len());
    let bias = random(&mut rng, d.out_channels);
    let out_grad = random(&mut rng, n * d.out_len());

    let mut col = vec![0.0; n * d.col_len()];
    let mut want = vec![0.0; n * d.out_len()];
    conv2d_forward(&d, n, &input, &weight, &bias, &mut col, &mut want);
    crate::nn::activation::relu_forward(&mut want);
    let want = image_major(&want, OC, n, S * S);
    let mut padded = PaddedImages::new(n);
    // Filled twice, so that the first images' values could show through if filling left any.
    padded.fill(n, &random(&mut rng, n * S * S));
    padded.fill(n, &input);
    let mut got = vec![f32::NAN; n * d.out_len()];
    conv_relu_forward(n, padded.as_ref(), &weight, &bias, &mut got);
    assert_close(&got, &want);

    // Image 3 is blank: its outputs are the ReLU of the bias alone.
    for o in 0..6 {
        assert!(got[(3 * OC + o) * S * S..][..S * S].iter().all(|&v| v == bias[o].max(0.0)));
    }

    let (mut gw_want, mut gb_want) = (vec![0.5; d.weight_len()], vec![0.5; 6]);
    conv2d_backward(&d, n, &col, &weight, &out_grad, &mut gw_want, &mut gb_want, None);
    let out_grad = image_major(&out_grad, OC, n, S * S);
    let (mut gw, mut gb) = (vec![0.5; d.weight_len()], vec![0.5; 6]);
    let mut scratch = vec![f32::NAN; n * SCRATCH_LEN];
    conv_backward(n, padded.as_ref(), &out_grad, &mut gw, &mut gb, &mut scratch);
    assert_close(&gw, &gw_want);
    assert_close(&gb, &gb_want);

    // Both forms of the AVX-512 weight gradient, of which a CPU picks one.
    #[cfg(target_arch = "x86_64")]
    if crate::simd::cpu_has(crate::simd::Isa::Avx512) {
        type Backward = unsafe fn(usize, &[f32], &[LiveRows], &[f32], &mut [f32], &mut [f32]);
        let forms: [Backward; 2] = [avx512::backward::<true>, avx512::backward::<false>];
        for backward in forms {
            let (mut gw, mut gb) = (vec![0.5; d.weight_len()], vec![0.5; 6]);
            // SAFETY: the CPU has AVX-512, and the buffers are the kernels' sizes.
            unsafe { backward(n, &padded.values, &padded.live, &out_grad, &mut gw, &mut gb) };
            assert_close(&gw, &gw_want);
            assert_close(&gb, &gb_want);
        }
    }

    // The AVX2 kernels, which a CPU with AVX-512 does not pick on its own.
    #[cfg(target_arch = "x86_64")]
    if crate::simd::cpu_has(crate::simd::Isa::Avx2) {
        let mut got = vec![f32::NAN; n * d.out_len()];
        // SAFETY: the CPU has AVX2 and FMA, and the buffers are the kernels' sizes.
        unsafe { avx2::forward(n, &padded.values, &padded.live, &weight, &bias, &mut got) };
        assert_close(&got, &want);
        let (mut gw, mut gb) = (vec![0.5; d.weight_len()], vec![0.5; 6]);
        // SAFETY: as above.
        unsafe { avx2::backward(n, &padded.values, &padded.live, &out_grad, &mut gw, &mut gb) };
        assert_close(&gw, &gw_want);
        assert_close(&gb, &gb_want);
    }

    // The baseline (no AVX2/FMA) build of the same kernels.
    let mut got = vec![f32::NAN; n * d.out_len()];
    forward_relu_body::<false>(n, &padded.values, &padded.live, &weight, &bias, &mut got);
    assert_close(&got, &want);
    let (mut gw, mut gb) = (vec![0.5; d.weight_len()], vec![0.5; 6]);
    backward_body::<false>(n, &padded.values, &padded.live, &out_grad, &mut gw, &mut gb, &mut scratch);
    assert_close(&gw, &gw_want);
    assert_close(&gb, &gb_want);
}
