//! The numbers of the recipe against PyTorch: forward, loss, every gradient, and SGD steps, for both heads.
//! Fixtures come from `tests/fixtures/generate.py`.

use crate::data::Split;
use crate::nn::model::{Head, Workspace, backward, forward, loss_and_grad};
use crate::nn::params::{MNIST_PARAMS, Param};
use crate::optim::Sgd;
use crate::spec::recipe;
use crate::train::{TrainConfig, Trainer};
use safetensors::SafeTensors;

struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    fn load() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/reference.safetensors");
        Fixture { bytes: std::fs::read(path).expect("reference fixture") }
    }

    fn f32(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture lacks {name}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }

    fn labels(&self) -> Vec<u16> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor("y").unwrap();
        t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u16).collect()
    }

    /// A flat parameter block from tensors named `{prefix}{state_dict name}`.
    fn params(&self, prefix: &str) -> Vec<f32> {
        let mut flat = Vec::with_capacity(MNIST_PARAMS);
        for p in Param::ALL {
            flat.extend(self.f32(&format!("{prefix}{}", p.name())));
        }
        assert_eq!(flat.len(), MNIST_PARAMS);
        flat
    }

    /// The batch as a data-set split (the fixture's pixels are bytes / 255, so this is exact).
    fn split(&self) -> Split {
        let x = self.f32("x");
        let images: Vec<u8> = x.iter().map(|v| (v * 255.0).round() as u8).collect();
        for (a, b) in images.iter().zip(&x) {
            assert_eq!(*a as f32 / 255.0, *b);
        }
        Split { images, labels: self.labels() }
    }
}

/// Passes when every element is within 1e-5, absolutely or relative to the reference.
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(1.0);
        if err > worst.0 || err.is_nan() {
            worst = (err, i);
        }
    }
    assert!(
        worst.0 <= 1e-5,
        "{what}: element {} is {} but PyTorch has {} (error {:e})",
        worst.1,
        got[worst.1],
        want[worst.1],
        worst.0
    );
}

fn head_prefix(head: Head) -> &'static str {
    head.name()
}

fn check_forward_and_gradients(head: Head) {
    let fx = Fixture::load();
    let params = fx.params("init.");
    let labels = fx.labels();
    let mut ws = Workspace::new(16, 10);
    ws.input.copy_from_slice(&fx.f32("x"));
    forward(&params, head, &mut ws, 16, &mut ());
    let p = head_prefix(head);
    assert_close(&format!("{p} scores"), &ws.scores, &fx.f32(&format!("{p}.scores")));
    let (loss_sum, _) = loss_and_grad(&mut ws, &labels, 16, 0.0);
    assert_close(&format!("{p} loss"), &[loss_sum / 16.0], &fx.f32(&format!("{p}.loss")));
    let mut grads = vec![0.0; MNIST_PARAMS];
    backward(&params, head, &mut ws, 16, &mut grads, &mut ());
    for (name, r) in Param::ALL.map(|p| (p.name(), p.range(10))) {
        let want = fx.f32(&format!("{p}.grad.{name}"));
        // Gradients are small; compare them relative to the tensor's own scale.
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
        let g: Vec<f32> = grads[r].iter().map(|v| v / scale).collect();
        let w: Vec<f32> = want.iter().map(|v| v / scale).collect();
        assert_close(&format!("{p} grad {name}"), &g, &w);
    }
}

#[test]
fn sigmoid_head_forward_loss_and_gradients_match_pytorch() {
    check_forward_and_gradients(Head::Sigmoid);
}

#[test]
fn logits_head_forward_loss_and_gradients_match_pytorch() {
    check_forward_and_gradients(Head::Logits);
}

fn check_three_steps(head: Head, threads: usize) {
    let fx = Fixture::load();
    let split = fx.split();
    let config = TrainConfig { head, ..recipe() };
    let mut trainer = Trainer::new(config.check().unwrap(), fx.params("init."), None, threads).unwrap();
    let indices: Vec<u32> = (0..16).collect();
    for _ in 0..3 {
        trainer.step(&split, &indices);
    }
    let p = head_prefix(head);
    assert_close(&format!("{p} params after 3 steps"), trainer.params(), &fx.params(&format!("{p}.after3.")));
}

#[test]
fn three_sgd_momentum_steps_match_pytorch_for_both_heads() {
    check_three_steps(Head::Sigmoid, 1);
    check_three_steps(Head::Logits, 2);
}

#[test]
fn weight_decay_steps_match_pytorch() {
    let fx = Fixture::load();
    let split = fx.split();
    let config = TrainConfig { sgd: Sgd { lr: 1e-2, momentum: 0.9, weight_decay: 5e-2 }, ..recipe() };
    let mut trainer = Trainer::new(config.check().unwrap(), fx.params("init."), None, 2).unwrap();
    let indices: Vec<u32> = (0..16).collect();
    trainer.step(&split, &indices);
    trainer.step(&split, &indices);
    assert_close("params after 2 steps with weight decay", trainer.params(), &fx.params("wd.after2."));
}

/// A batch of more slices than a step holds runs in rounds (so that its memory does not grow with it); the
/// rounds give the bits of one pass over the whole batch: parameters, momentum, loss and accuracy, with any
/// number of rounds and threads, augmented or not, for a full batch and a short last one.
#[test]
fn a_batch_run_in_rounds_gives_the_bits_of_one_round() {
    let fx = Fixture::load();
    let split = fx.split();
    let run = |round_slices: usize, threads: usize, batch: usize, augment: bool| {
        let augment =
            augment.then_some(crate::data::Augment { degrees: 10.0, translate: 2.0, scale_min: 0.9, scale_max: 1.1 });
        let config = TrainConfig { batch_size: batch, augment, ..recipe() };
        let trainer = Trainer::new(config.check().unwrap(), fx.params("init."), None, threads).unwrap();
        let mut trainer = trainer.with_round_slices(round_slices);
        let mut results = Vec::new();
        for (step, len) in [batch, batch, batch - 11].into_iter().enumerate() {
            let idx: Vec<u32> = (0..len as u32).map(|i| (i * 7 + step as u32) % 16).collect();
            let r = trainer.step(&split, &idx);
            results.push((r.loss.to_bits(), r.correct));
        }
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        (bits(trainer.params()), bits(trainer.velocity()), results)
    };
    for (batch, augment) in [(200, false), (1000, true)] {
        let whole = run(usize::MAX, 2, batch, augment);
        for (round_slices, threads) in [(1, 1), (3, 2), (7, 3)] {
            let rounds = run(round_slices, threads, batch, augment);
            assert!(rounds == whole, "batch {batch} in rounds of {round_slices} slices on {threads} threads");
        }
    }
}

#[test]
fn thread_count_never_changes_the_numbers() {
    let fx = Fixture::load();
    let split = fx.split();
    let run = |threads: usize, batch: usize| {
        let config = TrainConfig { batch_size: batch, ..recipe() };
        let mut trainer = Trainer::new(config.check().unwrap(), fx.params("init."), None, threads).unwrap();
        for step in 0..4u32 {
            let idx: Vec<u32> = (0..batch as u32).map(|i| (i * 7 + step) % 16).collect();
            trainer.step(&split, &idx);
        }
        trainer.params().to_vec()
    };
    for batch in [16, 13, 5, 100] {
        let one = run(1, batch);
        assert_eq!(one, run(2, batch), "batch {batch}");
        assert_eq!(one, run(3, batch), "batch {batch}");
    }
}
