//! Finite-difference checks of every layer's backward pass: for a random projection `L = sum(out * r)`, the
//! analytic gradient from backward must match central differences of the forward pass.

use crate::nn::reference::{
    Conv2dDims, LinearDims, Pool2Dims, avgpool2_backward, avgpool2_forward, conv2d_backward, conv2d_forward,
    cross_entropy, linear_backward, linear_forward, relu_backward, relu_forward, sigmoid_backward, sigmoid_forward,
};
use crate::rng::Rng;

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Compares `analytic[i]` with the central difference of `loss` in `x[i]` for a sample of indices.
fn check(what: &str, x: &mut [f32], analytic: &[f32], rng: &mut Rng, loss: &mut dyn FnMut(&[f32]) -> f64) {
    let eps = 1e-2f32;
    for _ in 0..24 {
        let i = rng.below(x.len() as u64) as usize;
        let orig = x[i];
        x[i] = orig + eps;
        let up = loss(x);
        x[i] = orig - eps;
        let down = loss(x);
        x[i] = orig;
        let numeric = (up - down) / (2.0 * eps as f64);
        let a = analytic[i] as f64;
        assert!((numeric - a).abs() <= 2e-3 * (1.0 + a.abs()), "{what}[{i}]: analytic {a}, numeric {numeric}");
    }
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    let mut rng = Rng::new(1);
    let d = Conv2dDims { in_channels: 3, out_channels: 4, in_size: 8, kernel: 3, padding: 1 };
    let n = 2;
    let mut input = random(&mut rng, n * d.in_len());
    let mut weight = random(&mut rng, d.weight_len());
    let mut bias = random(&mut rng, d.out_channels);
    let r = random(&mut rng, n * d.out_len());
    let mut col = vec![0.0; n * d.col_len()];
    let mut out = vec![0.0; n * d.out_len()];
    conv2d_forward(&d, n, &input, &weight, &bias, &mut col, &mut out);
    let (mut gw, mut gb, mut gi) = (vec![0.0; weight.len()], vec![0.0; bias.len()], vec![0.0; input.len()]);
    let mut gcol = vec![0.0; n * d.col_len()];
    conv2d_backward(&d, n, &col, &weight, &r, &mut gw, &mut gb, Some((&mut gi, &mut gcol)));
    let run = |i: &[f32], w: &[f32], b: &[f32]| {
        let mut col = vec![0.0; n * d.col_len()];
        let mut out = vec![0.0; n * d.out_len()];
        conv2d_forward(&d, n, i, w, b, &mut col, &mut out);
        dot(&out, &r)
    };
    let (w0, b0) = (weight.clone(), bias.clone());
    check("conv input", &mut input, &gi, &mut rng, &mut |x| run(x, &w0, &b0));
    let i0 = input.clone();
    check("conv weight", &mut weight, &gw, &mut rng, &mut |x| run(&i0, x, &b0));
    let w0 = weight.clone();
    check("conv bias", &mut bias, &gb, &mut rng, &mut |x| run(&i0, &w0, x));
}

#[test]
fn linear_gradients_match_finite_differences() {
    let mut rng = Rng::new(2);
    let d = LinearDims { in_features: 13, out_features: 7 };
    let n = 3;
    let mut input = random(&mut rng, n * d.in_features);
    let mut weight = random(&mut rng, d.weight_len());
    let mut bias = random(&mut rng, d.out_features);
    let r = random(&mut rng, n * d.out_features);
    let (mut gw, mut gb, mut gi) = (vec![0.0; weight.len()], vec![0.0; bias.len()], vec![0.0; input.len()]);
    linear_backward(&d, n, &input, &weight, &r, Some(&mut gw), &mut gb, Some(&mut gi));
    let run = |i: &[f32], w: &[f32], b: &[f32]| {
        let mut out = vec![0.0; n * d.out_features];
        linear_forward(&d, n, i, w, b, &mut out);
        dot(&out, &r)
    };
    let (w0, b0) = (weight.clone(), bias.clone());
    check("linear input", &mut input, &gi, &mut rng, &mut |x| run(x, &w0, &b0));
    let i0 = input.clone();
    check("linear weight", &mut weight, &gw, &mut rng, &mut |x| run(&i0, x, &b0));
    let w0 = weight.clone();
    check("linear bias", &mut bias, &gb, &mut rng, &mut |x| run(&i0, &w0, x));
}

#[test]
fn avgpool_gradients_match_finite_differences() {
    let mut rng = Rng::new(3);
    let d = Pool2Dims { channels: 3, in_size: 6 };
    let mut input = random(&mut rng, 2 * d.in_len());
    let r = random(&mut rng, 2 * d.out_len());
    let mut gi = vec![0.0; input.len()];
    avgpool2_backward(&d, 2, &r, &mut gi);
    check("pool input", &mut input, &gi, &mut rng, &mut |x| {
        let mut out = vec![0.0; 2 * d.out_len()];
        avgpool2_forward(&d, 2, x, &mut out);
        dot(&out, &r)
    });
}

#[test]
fn activation_gradients_match_finite_differences() {
    let mut rng = Rng::new(4);
    // Keep ReLU inputs away from the kink, where the derivative is undefined.
    let mut x: Vec<f32> = random(&mut rng, 50).into_iter().map(|v| if v.abs() < 0.05 { v + 0.1 } else { v }).collect();
    let r = random(&mut rng, 50);
    let mut out = x.clone();
    relu_forward(&mut out);
    let mut g = r.clone();
    relu_backward(&out, &mut g);
    check("relu", &mut x, &g, &mut rng, &mut |x| {
        let mut o = x.to_vec();
        relu_forward(&mut o);
        dot(&o, &r)
    });
    let mut x = random(&mut rng, 50);
    let mut out = vec![0.0; 50];
    sigmoid_forward(&x, &mut out);
    let mut g = r.clone();
    sigmoid_backward(&out, &mut g);
    check("sigmoid", &mut x, &g, &mut rng, &mut |x| {
        let mut o = vec![0.0; 50];
        sigmoid_forward(x, &mut o);
        dot(&o, &r)
    });
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let mut rng = Rng::new(5);
    let mut s: Vec<f32> = random(&mut rng, 10).into_iter().map(|v| 3.0 * v).collect();
    let mut g = vec![0.0; 10];
    cross_entropy(&s, 4, Some((&mut g, 1.0)));
    check("cross-entropy", &mut s, &g, &mut rng, &mut |x| cross_entropy(x, 4, None).0 as f64);
    // and the value itself: -log softmax
    let (l, _) = cross_entropy(&[0.0, 0.0], 1, None);
    assert!((l - std::f32::consts::LN_2).abs() < 1e-6);
}

#[test]
fn smoothed_cross_entropy_matches_pytorch_and_finite_differences() {
    use crate::nn::loss::cross_entropy_smoothed;
    // torch.nn.functional.cross_entropy(s, t, label_smoothing=0.1) and s.grad after backward().
    let s = [0.3, -1.2, 2.0, 0.5, 0.0];
    let torch_grad = [0.095_482_79, 0.005_767_694, 0.612_146_7, -0.778_948_96, 0.065_551_77];
    let mut g = [0.0; 5];
    let (l, _) = cross_entropy_smoothed(&s, 3, 0.1, Some((&mut g, 1.0)));
    assert!((l - 1.976_633_8).abs() < 1e-6, "{l}");
    for (a, b) in g.iter().zip(torch_grad) {
        assert!((a - b).abs() < 1e-6, "{g:?}");
    }
    let mut rng = Rng::new(6);
    let mut s: Vec<f32> = random(&mut rng, 10).into_iter().map(|v| 3.0 * v).collect();
    let mut g = vec![0.0; 10];
    cross_entropy_smoothed(&s, 4, 0.2, Some((&mut g, 1.0)));
    check("smoothed cross-entropy", &mut s, &g, &mut rng, &mut |x| cross_entropy_smoothed(x, 4, 0.2, None).0 as f64);
    // No smoothing is the plain loss, to the bit.
    let (mut a, mut b) = (vec![0.0; 10], vec![0.0; 10]);
    assert_eq!(cross_entropy_smoothed(&s, 7, 0.0, Some((&mut a, 0.5))), cross_entropy(&s, 7, Some((&mut b, 0.5))));
    assert_eq!(a, b);
}
