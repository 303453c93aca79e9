use super::*;
use crate::rng::Rng;

#[test]
fn pixel_major_pooling_matches_channel_major() {
    let d = Pool2Dims { channels: 16, in_size: 10 };
    let n = 3;
    let (h, ch) = (d.in_size, d.channels);
    let mut rng = Rng::new(3);
    // A ReLU output (some exact zeros) in both layouts: `(n, C, H, H)` and `(n, H, H, C)`.
    let act: Vec<f32> = (0..n * d.in_len()).map(|_| rng.uniform(-1.0, 1.0).max(0.0)).collect();
    let mut act_px = vec![0.0; act.len()];
    for b in 0..n {
        for c in 0..ch {
            for p in 0..h * h {
                act_px[(b * h * h + p) * ch + c] = act[(b * ch + c) * h * h + p];
            }
        }
    }
    let mut want = vec![0.0; n * d.out_len()];
    avgpool2_forward(&d, n, &act, &mut want);
    let mut got = vec![f32::NAN; n * d.out_len()];
    avgpool2_pixel_major_flatten(&d, n, &act_px, &mut got);
    assert_eq!(got, want, "(n, C, H/2, H/2) is the flattened order");
    let mut portable = vec![f32::NAN; n * d.out_len()];
    flatten_body::<false>(&d, n, &act_px, &mut portable);
    assert_eq!(portable, want, "the portable path");

    let g: Vec<f32> = (0..n * d.out_len()).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let mut want = vec![0.0; n * d.in_len()];
    avgpool2_relu_backward(&d, n, &g, &act, &mut want);
    let mut in_place = act.clone();
    avgpool2_relu_backward_in_place(&d, n, &g, &mut in_place);
    assert_eq!(in_place, want);
    let mut got = vec![f32::NAN; n * d.in_len()];
    avgpool2_pixel_major_relu_backward(&d, n, &g, &act_px, &mut got);
    for b in 0..n {
        for c in 0..ch {
            for p in 0..h * h {
                assert_eq!(got[(b * h * h + p) * ch + c], want[(b * ch + c) * h * h + p]);
            }
        }
    }
    assert!(want.contains(&0.0) && want.iter().any(|&v| v != 0.0));
}

#[test]
fn fast_channel_major_kernels_match_the_portable_ones() {
    let mut rng = Rng::new(5);
    for (channels, in_size, n) in [(6, 28, 3), (2, 32, 2), (3, 10, 2), (1, 2, 1)] {
        let d = Pool2Dims { channels, in_size };
        let act: Vec<f32> = (0..n * d.in_len()).map(|_| rng.uniform(-1.0, 1.0).max(0.0)).collect();
        let g: Vec<f32> = (0..n * d.out_len()).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let (mut want, mut got) = (vec![0.0; n * d.out_len()], vec![f32::NAN; n * d.out_len()]);
        forward_body::<false>(&d, n, &act, &mut want);
        avgpool2_forward(&d, n, &act, &mut got);
        assert_eq!(got, want, "forward {d:?}");
        let (mut want, mut got) = (act.clone(), act.clone());
        relu_backward_in_place_body::<false>(&d, n, &g, &mut want);
        avgpool2_relu_backward_in_place(&d, n, &g, &mut got);
        assert_eq!(got, want, "backward {d:?}");
        // The AVX2 kernels, which a CPU with AVX-512 does not pick on its own.
        #[cfg(target_arch = "x86_64")]
        if crate::simd::cpu_has(crate::simd::Isa::Avx2) {
            let mut forward = vec![f32::NAN; n * d.out_len()];
            // SAFETY: the CPU has AVX2; rows of at most 32 values, buffers of `n` images.
            unsafe { avx2::forward(&d, n, &act, &mut forward) };
            let mut want_forward = vec![0.0; n * d.out_len()];
            forward_body::<false>(&d, n, &act, &mut want_forward);
            assert_eq!(forward, want_forward, "AVX2 forward {d:?}");
            if in_size == BACKWARD_SIZE {
                let mut got = act.clone();
                // SAFETY: as above, and the size is the kernel's.
                unsafe { avx2::relu_backward_in_place(&d, n, &g, &mut got) };
                assert_eq!(got, want, "AVX2 backward {d:?}");
            }
        }
        assert!(want.contains(&0.0) && want.iter().any(|&v| v != 0.0));
    }
}
