use super::*;
use crate::nn::conv::{conv2d_backward, conv2d_forward, image_major};
use crate::nn::model::CONV2;
use crate::rng::Rng;

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

/// `(C, n, S, S)` -> `(n, S, S, C)`.
fn to_pixel_major(x: &[f32], channels: usize, n: usize, plane: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for c in 0..channels {
        for b in 0..n {
            for p in 0..plane {
                out[(b * plane + p) * channels + c] = x[(c * n + b) * plane + p];
            }
        }
    }
    out
}

type Kernels = (
    fn(usize, &[f32], &[f32], &[f32], &mut [f32]),
    fn(usize, &[f32], &[f32], &mut [f32], &mut [f32]),
    fn(usize, &[f32], &mut [f32], &[f32], &mut [f32]),
);

/// The dispatched kernels (AVX-512 here when the CPU has it), then the portable ones as compiled for the
/// baseline target, which a CPU with AVX2 never picks on its own, and the AVX2 ones where the CPU has them.
fn kernels() -> Vec<(&'static str, Kernels)> {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut kernels: Vec<(&str, Kernels)> = vec![
        ("dispatched", (conv_relu_forward, weight_grad, input_grad)),
        (
            "baseline",
            (forward_body::<false>, weight_grad_body::<false>, |n, grad, rows, packed, gi| {
                pad_grad_rows(n, grad, rows);
                input_grad_body::<false>(n, rows, packed, gi)
            }),
        ),
    ];
    // The AVX2 kernels, which a CPU with AVX-512 does not pick on its own.
    #[cfg(target_arch = "x86_64")]
    if crate::simd::cpu_has(crate::simd::Isa::Avx2) {
        kernels.push((
            "avx2",
            (
                // SAFETY: the CPU has AVX2 and FMA, and the test's buffers are the kernels' sizes.
                |n, input, packed, bias, out| unsafe { avx2::forward(n, input, packed, bias, out) },
                |n, input, grad, gw, gb| unsafe { avx2::weight_grad(n, input, grad, gw, gb) },
                |n, grad, _, packed, gi| unsafe { avx2::input_grad(n, grad, packed, gi) },
            ),
        ));
    }
    kernels
}

#[test]
fn matches_im2col_gemm_forward_and_backward() {
    assert!(supports(&CONV2));
    let d = CONV2;
    let kernels = kernels();
    for n in [1, 3, 8] {
        let mut rng = Rng::new(5 + n as u64);
        let input = random(&mut rng, n * d.in_len());
        let weight = random(&mut rng, d.weight_len());
        let bias = random(&mut rng, d.out_channels);
        let mut out_grad = random(&mut rng, n * d.out_len());

        let mut col = vec![0.0; n * d.col_len()];
        let mut want = vec![0.0; n * d.out_len()];
        conv2d_forward(&d, n, &input, &weight, &bias, &mut col, &mut want);
        crate::nn::activation::relu_forward(&mut want);
        // The gradient as the ReLU mask leaves it.
        crate::nn::activation::relu_backward(&want, &mut out_grad);
        let (mut gw_want, mut gb_want) = (vec![0.5; d.weight_len()], vec![0.5; OC]);
        let mut gi_want = vec![0.0; n * d.in_len()];
        let mut col_grad = vec![0.0; n * d.col_len()];
        conv2d_backward(
            &d,
            n,
            &col,
            &weight,
            &out_grad,
            &mut gw_want,
            &mut gb_want,
            Some((&mut gi_want, &mut col_grad)),
        );

        // The kernels' layout of the input and its gradient.
        let (input, gi_want) = (image_major(&input, C, n, PLANE), image_major(&gi_want, C, n, PLANE));
        let mut packed = vec![0.0; PACKED_WEIGHT_LEN];
        pack_weight(&weight, &mut packed);
        let grad_px = to_pixel_major(&out_grad, OC, n, OS * OS);

        // The fused pooling backward gives the same two layouts as the pooling backward and the padding.
        let pool = crate::nn::model::POOL2;
        let pooled_grad = random(&mut rng, n * pool.out_len());
        let relu_out = to_pixel_major(&want, OC, n, OS * OS);
        let mut want_px = vec![0.0; n * OUT_LEN];
        crate::nn::pool::avgpool2_pixel_major_relu_backward(&pool, n, &pooled_grad, &relu_out, &mut want_px);
        let mut got_px = relu_out.clone();
        output_grad_from_pooled(n, &pooled_grad, &mut got_px);
        assert_eq!(got_px, want_px);
        for &(name, (forward, weight_grad, input_grad)) in &kernels {
            let mut got = vec![f32::NAN; n * OUT_LEN];
            forward(n, &input, &packed, &bias, &mut got);
            assert_close(&format!("{name} forward n={n}"), &got, &to_pixel_major(&want, OC, n, OS * OS));
            let (mut gw, mut gb) = (vec![0.5; d.weight_len()], vec![0.5; OC]);
            weight_grad(n, &input, &grad_px, &mut gw, &mut gb);
            assert_close(&format!("{name} weight grad n={n}"), &gw, &gw_want);
            assert_close(&format!("{name} bias grad n={n}"), &gb, &gb_want);
            let mut gi = vec![f32::NAN; n * d.in_len()];
            let mut rows = vec![0.0; n * GRAD_ROWS_LEN];
            input_grad(n, &grad_px, &mut rows, &packed, &mut gi);
            assert_close(&format!("{name} input grad n={n}"), &gi, &gi_want);
        }
    }
}
