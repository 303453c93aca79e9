use super::*;
use crate::nn::linear::linear_weight_grad_rows;
use crate::rng::Rng;

struct Parts(Vec<(Vec<f32>, Vec<f32>)>);

impl GradParts for Parts {
    fn parts(&self) -> usize {
        self.0.len()
    }
    fn part(&self, s: usize) -> (&[f32], &[f32]) {
        (&self.0[s].0, &self.0[s].1)
    }
}

#[test]
fn fused_gradient_and_update_match_gradient_then_update() {
    let mut rng = Rng::new(3);
    let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect() };
    // Register tiles of every height (4, 3, 2 and 1 rows), rows of whole vectors and rows that end in a half one,
    // and a row length that is no whole number of vectors.
    let shapes = [
        (400, 120, 0..8),
        (120, 84, 80..84),
        (84, 10, 8..10),
        (84, 10, 0..8),
        (120, 11, 0..7),
        (84, 9, 8..9),
        (37, 9, 3..5),
    ];
    for (i_len, o_len, rows) in shapes {
        let d = LinearDims { in_features: i_len, out_features: o_len };
        for (images, weight_decay) in [(&[8usize][..], 0.0), (&[8, 8][..], 0.0), (&[8, 5, 3][..], 0.01)] {
            let mut parts = Parts(images.iter().map(|&n| (random(n * i_len), random(n * o_len))).collect());
            // A dead unit (in a block of more than one row): the first row's gradient is zero, and its velocity
            // turns subnormal, so is flushed.
            let dead = rows.len() > 1;
            if dead {
                for (_, out_grad) in &mut parts.0 {
                    out_grad.iter_mut().skip(rows.start).step_by(o_len).for_each(|g| *g = 0.0);
                }
            }
            let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay };
            let len = rows.len() * i_len;
            let (p0, mut v0) = (random(len), random(len));
            if dead {
                v0[..i_len].fill(1.2e-38);
            }
            // The definition: the gradient written out, then the update.
            let mut g = vec![0.0; len];
            for (s, (input, out_grad)) in parts.0.iter().enumerate() {
                let n = input.len() / i_len;
                let beta = if s == 0 { 0.0 } else { 1.0 };
                linear_weight_grad_rows(&d, n, input, out_grad, rows.clone(), beta, &mut g);
            }
            let (mut want_p, mut want_v) = (p0.clone(), v0.clone());
            sgd.step(&mut want_p, &mut want_v, &g);
            let (mut p, mut v) = (p0.clone(), v0.clone());
            weight_grad_step_rows(&d, &parts, rows.clone(), sgd, &mut p, &mut v, Carry::none());
            let (mut pp, mut pv) = (p0.clone(), v0.clone());
            weight_grad_step_rows_body::<false, _>(&d, &parts, rows.clone(), sgd, &mut pp, &mut pv, Carry::none());
            // The AVX2 kernel, which a CPU with AVX-512 does not pick on its own (where it cannot run, the
            // definition stands in).
            let (mut ap, mut av) = (p0.clone(), v0.clone());
            #[cfg(target_arch = "x86_64")]
            let avx2_ran = crate::simd::cpu_has(crate::simd::Isa::Avx2) && {
                // SAFETY: the CPU has AVX2 and FMA; the shapes are those `weight_grad_step_rows` checked.
                unsafe { avx2::weight_grad_step_rows(&d, &parts, rows.clone(), sgd, &mut ap, &mut av, Carry::none()) };
                true
            };
            #[cfg(not(target_arch = "x86_64"))]
            let avx2_ran = false;
            if !avx2_ran {
                (ap, av) = (want_p.clone(), want_v.clone());
            }
            for (got, want) in
                [(&p, &want_p), (&v, &want_v), (&pp, &want_p), (&pv, &want_v), (&ap, &want_p), (&av, &want_v)]
            {
                for (x, y) in got.iter().zip(want.iter()) {
                    assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y} ({i_len},{o_len},{rows:?})");
                }
            }
            // The update really happened (a test that cannot fail is no test).
            let live = if dead { i_len } else { 0 };
            assert!(p[live..].iter().zip(&p0[live..]).any(|(a, b)| a != b));
            if dead && weight_decay == 0.0 {
                assert!(v[..i_len].iter().all(|&x| x == 0.0), "the dead row's velocity is flushed");
            }
        }
    }
}

/// A kernel as the tests call it: the parts, the rows' parameters and momentum, the carry.
type Kernel<'k> = &'k dyn Fn(&Parts, &mut [f32], &mut [f32], Carry<'_>);

/// A batch summed over several calls (rounds), its gradient carried from call to call, gives the bits of one
/// call on all its parts: with each kernel, for each way of cutting the parts into rounds, and for a last tile
/// narrower than a vector.
#[test]
fn rounds_give_the_bits_of_one_call() {
    let mut rng = Rng::new(5);
    let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect() };
    #[allow(clippy::single_range_in_vec_init)]
    let cuts: [&[std::ops::Range<usize>]; 4] = [&[0..4], &[0..1, 1..4], &[0..2, 2..3, 3..4], &[0..1, 1..2, 2..3, 3..4]];
    for (i_len, o_len, rows) in [(400, 120, 0..8), (120, 84, 80..84), (84, 10, 8..10), (37, 9, 3..5)] {
        let d = LinearDims { in_features: i_len, out_features: o_len };
        let parts = Parts([8usize, 5, 3, 8].iter().map(|&n| (random(n * i_len), random(n * o_len))).collect());
        let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.01 };
        let len = rows.len() * i_len;
        let (p0, v0) = (random(len), random(len));
        let dispatched = |parts: &Parts, p: &mut [f32], v: &mut [f32], carry: Carry<'_>| {
            weight_grad_step_rows(&d, parts, rows.clone(), sgd, p, v, carry)
        };
        let portable = |parts: &Parts, p: &mut [f32], v: &mut [f32], carry: Carry<'_>| {
            weight_grad_step_rows_body::<false, _>(&d, parts, rows.clone(), sgd, p, v, carry)
        };
        #[cfg(target_arch = "x86_64")]
        let avx2 = |parts: &Parts, p: &mut [f32], v: &mut [f32], carry: Carry<'_>| {
            // SAFETY: only called where the CPU has AVX2 and FMA; the shapes are those the dispatcher checks.
            unsafe { avx2::weight_grad_step_rows(&d, parts, rows.clone(), sgd, p, v, carry) }
        };
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut kernels: Vec<(&str, Kernel)> = vec![("dispatched", &dispatched), ("portable", &portable)];
        #[cfg(target_arch = "x86_64")]
        if crate::simd::cpu_has(crate::simd::Isa::Avx2) {
            kernels.push(("avx2", &avx2));
        }
        for (name, kernel) in kernels {
            let (mut want_p, mut want_v) = (p0.clone(), v0.clone());
            kernel(&parts, &mut want_p, &mut want_v, Carry::none());
            assert!(want_p != p0, "{name}: no update");
            for cut in cuts {
                // The carry starts as NaN: a first round that read it would show.
                let (mut p, mut v, mut carry) = (p0.clone(), v0.clone(), vec![f32::NAN; len]);
                for (k, range) in cut.iter().enumerate() {
                    let round = Round::of(k, cut.len());
                    kernel(&Parts(parts.0[range.clone()].to_vec()), &mut p, &mut v, Carry { round, sum: &mut carry });
                    if !round.updates() {
                        assert_eq!(p, p0, "{name}: a round before the last updated");
                    }
                }
                let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&p), bits(&want_p), "{name}, rounds {cut:?}, ({i_len},{o_len},{rows:?})");
                assert_eq!(bits(&v), bits(&want_v), "{name}, rounds {cut:?}, ({i_len},{o_len},{rows:?})");
            }
        }
    }
}
