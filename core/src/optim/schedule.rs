//! Learning-rate schedules: one rate per epoch, as PyTorch's `torch.optim.lr_scheduler` stepped once after each
//! epoch (the default), or one per batch, as the scheduler stepped after each batch. The constant schedule (the recipe) returns the base rate itself, so it changes no bit.

use serde::{Deserialize, Serialize};

/// How the learning rate moves from epoch to epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LrSchedule {
    /// The base rate throughout (the recipe).
    #[default]
    Constant,
    /// PyTorch's `StepLR`: the base rate times `gamma` for every `step_size` epochs finished.
    Step { step_size: usize, gamma: f32 },
    /// `warmup` epochs rising linearly to the base rate (epoch `e` of them at `e / warmup` of it), then
    /// PyTorch's `CosineAnnealingLR` from the base rate towards zero over the epochs left.
    Cosine { warmup: usize },
    /// PyTorch's `OneCycleLR` with one step per epoch and its defaults: from a 25th of the base rate up to the
    /// base rate over `warmup` epochs, then down to a 250,000th of it at the last epoch, both halves on a cosine.
    #[serde(rename = "onecycle")]
    OneCycle { warmup: usize },
}

impl LrSchedule {
    /// The schedule's name, as the command line spells it.
    pub fn name(&self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Step { .. } => "step",
            LrSchedule::Cosine { .. } => "cosine",
            LrSchedule::OneCycle { .. } => "onecycle",
        }
    }

    /// The warm-up epochs of the schedule (none for `constant` and `step`).
    pub fn warmup(&self) -> usize {
        match *self {
            LrSchedule::Cosine { warmup } | LrSchedule::OneCycle { warmup } => warmup,
            LrSchedule::Constant | LrSchedule::Step { .. } => 0,
        }
    }

    /// The rate of epoch `epoch` (1-based) of a run of `epochs` from the base rate `base`: the schedule stepped
    /// once per epoch.
    pub fn rate(&self, base: f32, epoch: usize, epochs: usize) -> f32 {
        self.rate_at(base, epoch.saturating_sub(1), epochs, 1)
    }

    /// The rate of step `step` (0-based) of a run of `steps`, with `per_epoch` steps in an epoch: the lengths
    /// the schedule gives in epochs (`step_size`, `warmup`) are that many steps each. With one step per epoch
    /// this is [`LrSchedule::rate`]; with one per batch it is PyTorch's scheduler stepped after every batch
    /// (`OneCycleLR` with `total_steps = epochs * batches` and `pct_start = warmup / epochs`).
    pub fn rate_at(&self, base: f32, step: usize, steps: usize, per_epoch: usize) -> f32 {
        let per_epoch = per_epoch.max(1);
        let (base64, pi) = (base as f64, std::f64::consts::PI);
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Step { step_size, gamma } => {
                let cuts = step / step_size.max(1).saturating_mul(per_epoch);
                (base64 * (gamma as f64).powi(cuts.min(i32::MAX as usize) as i32)) as f32
            }
            LrSchedule::Cosine { warmup } if step < warmup.saturating_mul(per_epoch) => {
                (base64 * (step + 1) as f64 / (warmup * per_epoch) as f64) as f32
            }
            LrSchedule::Cosine { warmup } => {
                let warmup = warmup * per_epoch;
                let span = steps.saturating_sub(warmup).max(1) as f64;
                let t = (step - warmup) as f64;
                (base64 * (1.0 + (pi * t / span).cos()) / 2.0) as f32
            }
            LrSchedule::OneCycle { warmup } => {
                let (low, end) = (base64 / 25.0, base64 / 25.0 / 1e4);
                // OneCycleLR's phases end at steps `warmup - 1` and `steps - 1`.
                let peak = warmup.saturating_mul(per_epoch).saturating_sub(1) as f64;
                let last = steps.saturating_sub(1).max(1) as f64;
                let anneal = |from: f64, to: f64, pct: f64| to + (from - to) / 2.0 * (1.0 + (pi * pct).cos());
                let s = step as f64;
                if warmup > 0 && s <= peak {
                    let pct = if peak > 0.0 { s / peak } else { 1.0 };
                    anneal(low, base64, pct) as f32
                } else {
                    anneal(base64, end, ((s - peak) / (last - peak).max(1.0)).min(1.0)) as f32
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(s: LrSchedule, epochs: usize) -> Vec<f32> {
        (1..=epochs).map(|e| s.rate(0.1, e, epochs)).collect()
    }

    #[test]
    fn constant_is_the_base_rate_itself() {
        assert!(rates(LrSchedule::Constant, 5).iter().all(|&r| r == 0.1));
    }

    #[test]
    fn step_multiplies_by_gamma_every_step_size_epochs() {
        let r = rates(LrSchedule::Step { step_size: 2, gamma: 0.5 }, 5);
        assert_eq!(r, [0.1, 0.1, 0.05, 0.05, 0.025]);
    }

    #[test]
    fn cosine_warms_up_then_follows_cosine_annealing() {
        let r = rates(LrSchedule::Cosine { warmup: 2 }, 6);
        // torch: CosineAnnealingLR(T_max=4) gives 0.1, 0.0854, 0.05, 0.0146 on its first four steps.
        let expected = [0.05, 0.1, 0.1, 0.085_355_34, 0.05, 0.014_644_66];
        for (a, b) in r.iter().zip(expected) {
            assert!((a - b).abs() < 1e-7, "{r:?}");
        }
        assert_eq!(rates(LrSchedule::Cosine { warmup: 0 }, 3)[0], 0.1);
    }

    #[test]
    fn onecycle_matches_pytorch_one_step_per_epoch() {
        // torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=5, pct_start=0.4): 0.004, 0.1,
        // then cosine down to 0.1 / 25 / 1e4 = 4e-7.
        let r = rates(LrSchedule::OneCycle { warmup: 2 }, 5);
        let expected = [0.004, 0.1, 0.075_000_1, 0.025_000_3, 4e-7];
        for (a, b) in r.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{r:?}");
        }
    }

    #[test]
    fn per_batch_rates_match_pytorch_stepped_after_every_batch() {
        // OneCycleLR(opt, max_lr=0.1, total_steps=10, pct_start=0.4): 5 epochs of 2 batches, 2 warm-up epochs.
        let onecycle =
            [0.004, 0.028, 0.076, 0.1, 0.093_301_3, 0.075_000_1, 0.050_000_2, 0.025_000_3, 0.006_699_1, 4e-7];
        // StepLR(opt, step_size=4, gamma=0.5): step_size 2 epochs of 2 batches.
        let step = [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025];
        for (schedule, expected) in
            [(LrSchedule::OneCycle { warmup: 2 }, onecycle), (LrSchedule::Step { step_size: 2, gamma: 0.5 }, step)]
        {
            let r: Vec<f32> = (0..10).map(|s| schedule.rate_at(0.1, s, 10, 2)).collect();
            for (a, b) in r.iter().zip(expected) {
                assert!((a - b).abs() < 1e-7, "{schedule:?}: {r:?}");
            }
        }
        // One step per epoch is the epoch schedule, to the bit.
        for schedule in [LrSchedule::OneCycle { warmup: 3 }, LrSchedule::Cosine { warmup: 2 }] {
            let by_epoch: Vec<f32> = (1..=9).map(|e| schedule.rate(0.05, e, 9)).collect();
            let by_step: Vec<f32> = (0..9).map(|s| schedule.rate_at(0.05, s, 9, 1)).collect();
            assert_eq!(by_epoch, by_step);
        }
    }
}
