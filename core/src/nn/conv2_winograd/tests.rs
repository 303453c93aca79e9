use super::*;
use crate::nn::conv2_direct;
use crate::rng::Rng;

fn random(rng: &mut Rng, n: usize, lo: f32) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(lo, 1.0)).collect()
}

/// Within `tol` of the reference, relative to the reference's largest value.
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in got.iter().zip(want).enumerate() {
        assert!((x - y).abs() <= tol * scale, "{what}[{i}]: {x} vs {y} (scale {scale})");
    }
}

#[test]
fn transforms_reproduce_the_direct_convolution() {
    for n in [1, 3, 8] {
        let mut rng = Rng::new(40 + n as u64);
        // Inputs as pooling of a ReLU leaves them (non-negative), weights and gradients of either sign.
        let input = random(&mut rng, C * n * H * H, 0.0);
        let weight = random(&mut rng, OC * C * K * K, -1.0);
        let bias = random(&mut rng, OC, -1.0);
        let mut packed = vec![0.0; conv2_direct::PACKED_WEIGHT_LEN];
        conv2_direct::pack_weight(&weight, &mut packed);
        let mut u = vec![0.0; WEIGHT_LEN];
        transform_weight(&packed, &mut u);

        let mut v_ref = vec![f32::NAN; n * INPUT_LEN];
        reference::transform_input(n, &input, &mut v_ref);
        let mut v = vec![f32::NAN; n * INPUT_LEN];
        transform_input(n, &input, &mut v);
        assert_close(&format!("transformed input n={n}"), &v, &v_ref, 1e-6);

        let mut want = vec![0.0; n * conv2_direct::OUT_LEN];
        conv2_direct::conv_relu_forward(n, &input, &packed, &bias, &mut want);
        let mut got_ref = vec![f32::NAN; n * conv2_direct::OUT_LEN];
        reference::forward(n, &v_ref, &u, &bias, &mut got_ref);
        assert_close(&format!("reference forward n={n}"), &got_ref, &want, 4e-6);
        let mut got = vec![f32::NAN; n * conv2_direct::OUT_LEN];
        conv_relu_forward(n, &v, &u, &bias, &mut got);
        assert_close(&format!("forward n={n}"), &got, &want, 4e-6);

        // The gradient as the ReLU mask leaves it.
        let mut grad = random(&mut rng, n * conv2_direct::OUT_LEN, -1.0);
        for (g, o) in grad.iter_mut().zip(&want) {
            if *o <= 0.0 {
                *g = 0.0;
            }
        }
        let (mut gw_want, mut gb_want) = (vec![0.5; OC * C * K * K], vec![0.5; OC]);
        conv2_direct::weight_grad(n, &input, &grad, &mut gw_want, &mut gb_want);
        let mut scratch = vec![f32::NAN; GRAD_SCRATCH_LEN];
        let (mut gw, mut gb) = (vec![0.5; OC * C * K * K], vec![0.5; OC]);
        weight_grad(n, &v, &grad, &mut scratch, &mut gw, &mut gb);
        assert_close(&format!("weight grad n={n}"), &gw, &gw_want, 4e-6);
        assert_close(&format!("bias grad n={n}"), &gb, &gb_want, 1e-6);
        let mut sums = vec![f32::NAN; WEIGHT_LEN];
        reference::weight_grad_sums(n, &v_ref, &grad, &mut sums);
        let mut gw_ref = vec![0.5; OC * C * K * K];
        untransform_weight_grad(&sums, &mut gw_ref);
        assert_close(&format!("reference weight grad n={n}"), &gw_ref, &gw_want, 4e-6);
    }
}
