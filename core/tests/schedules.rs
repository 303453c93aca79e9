//! Learning-rate schedules and early stopping in a training run: the constant schedule is the recipe's bits, a
//! moving one changes them and records each epoch's rate, and patience ends a run that stopped improving.

use lenet5_core::base::IMAGE_LEN;
use lenet5_core::data::Split;
use lenet5_core::nn::params::init_params_for;
use lenet5_core::optim::LrSchedule;
use lenet5_core::run::{Start, Training};
use lenet5_core::spec::recipe;
use lenet5_core::train::TrainConfig;

/// `n` images: class k is a bright band across rows 2k..2k+4, with one pixel that varies by image.
fn bands(n: usize) -> Split {
    let labels: Vec<u16> = (0..n).map(|i| (i * 7 % 10) as u16).collect();
    let mut images = vec![0u8; n * IMAGE_LEN];
    for (i, &k) in labels.iter().enumerate() {
        let img = &mut images[i * IMAGE_LEN..(i + 1) * IMAGE_LEN];
        img[2 * k as usize * 28..(2 * k as usize + 4) * 28].fill(255);
        img[(i * 13) % IMAGE_LEN] = 128;
    }
    Split { images, labels }
}

/// Trains `config` to its end on the bands; returns the weights and the run's record.
fn train(config: TrainConfig) -> (Vec<f32>, lenet5_core::run::TrainState) {
    let (train, test) = (bands(96), bands(40));
    let names: Vec<String> = (0..10).map(|k| k.to_string()).collect();
    let start = Start::Fresh { params: init_params_for(config.seed, 10) };
    let mut run = Training::new(config.check().unwrap(), "bands", &names, start, 2).unwrap();
    while !run.is_finished() {
        assert!(run.train_batches(&train, usize::MAX, &mut ()).unwrap());
        run.finish_epoch(&test, 0.0, &|| 0.0);
    }
    (run.trainer().params().to_vec(), run.state().clone())
}

fn config(lr_schedule: LrSchedule) -> TrainConfig {
    TrainConfig { epochs: 4, lr_schedule, ..recipe() }
}

#[test]
fn a_schedule_that_never_moves_gives_the_recipes_bits_and_a_moving_one_does_not() {
    let (recipe, state) = train(config(LrSchedule::Constant));
    assert!(state.history.iter().all(|m| m.lr == Some(1e-3f32 as f64)));
    let (flat, _) = train(config(LrSchedule::Step { step_size: 1, gamma: 1.0 }));
    assert_eq!(recipe, flat);
    let (cosine, state) = train(config(LrSchedule::Cosine { warmup: 1 }));
    assert_ne!(recipe, cosine);
    let lrs: Vec<f64> = state.history.iter().map(|m| m.lr.unwrap()).collect();
    let expected: Vec<f64> = (1..=4).map(|e| LrSchedule::Cosine { warmup: 1 }.rate(1e-3, e, 4) as f64).collect();
    assert_eq!(lrs, expected);
    assert!(lrs[0] == 1e-3f32 as f64 && lrs[3] < lrs[2] && lrs[2] < lrs[1]);
}

#[test]
fn patience_stops_a_run_whose_val_acc_stopped_improving() {
    // At this tiny learning rate val_acc barely moves, so it soon stops improving.
    let sgd = lenet5_core::optim::Sgd { lr: 1e-9, ..recipe().sgd };
    let (_, state) = train(TrainConfig { epochs: 30, sgd, patience: Some(3), ..recipe() });
    assert!(state.stopped_early(), "{state:?}");
    let best = state.best_epoch.unwrap();
    assert_eq!(state.epoch, best + 3);
    assert!(state.history.iter().skip(best).all(|m| m.val_acc <= state.best_val_acc.unwrap()));
    let (_, state) = train(TrainConfig { epochs: 5, sgd, patience: None, ..recipe() });
    assert!(!state.stopped_early() && state.epoch == 5);
}

#[test]
fn out_of_range_schedules_and_patience_are_refused() {
    for bad in [
        config(LrSchedule::Step { step_size: 0, gamma: 0.5 }),
        config(LrSchedule::Step { step_size: 2, gamma: -1.0 }),
        config(LrSchedule::Cosine { warmup: 4 }),
        config(LrSchedule::OneCycle { warmup: 9 }),
        TrainConfig { patience: Some(0), ..recipe() },
    ] {
        assert!(matches!(bad.clone().check(), Err(lenet5_core::Error::Setting { .. })), "{bad:?}");
    }
}

#[test]
fn a_run_that_diverges_stops_with_the_epoch_and_batch_and_metrics_keep_non_finite_values() {
    let train = bands(96);
    let names: Vec<String> = (0..10).map(|k| k.to_string()).collect();
    let sgd = lenet5_core::optim::Sgd { lr: 1e4, ..recipe().sgd };
    let config = TrainConfig { epochs: 3, sgd, head: lenet5_core::nn::Head::Logits, ..recipe() };
    let mut run =
        Training::new(config.check().unwrap(), "bands", &names, Start::Fresh { params: init_params_for(0, 10) }, 2)
            .unwrap();
    let e = run.train_batches(&train, usize::MAX, &mut ()).unwrap_err();
    assert!(matches!(e, lenet5_core::Error::Diverged { epoch: 1, .. }), "{e}");

    // A log of non-finite figures reads back as written (JSON itself has no number for them).
    let dir = tempfile::tempdir().unwrap();
    let m = lenet5_core::train::EpochMetrics {
        epoch: 1,
        train_loss: f64::NAN,
        train_acc: 0.5,
        val_loss: f64::INFINITY,
        val_acc: f64::NEG_INFINITY,
        lr: Some(0.1),
        train_seconds: 1.0,
        val_seconds: 0.25,
    };
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(&path, serde_json::to_string(&m).unwrap() + "\n{\"epoch\":2,\"train_loss\":null,\"train_acc\":1,\"val_loss\":0.5,\"val_acc\":0.5,\"train_seconds\":1,\"val_seconds\":1}\n").unwrap();
    let back = lenet5_core::run::read_metrics(&path).unwrap();
    assert!(back[0].train_loss.is_nan() && back[0].val_loss == f64::INFINITY && back[0].val_acc == f64::NEG_INFINITY);
    assert_eq!((back[0].train_acc, back[0].lr, back[0].val_seconds), (0.5, Some(0.1), 0.25));
    assert!(back[1].train_loss.is_nan() && back[1].lr.is_none() && back[1].train_acc == 1.0);
}

#[test]
fn a_rate_moved_every_batch_is_the_epoch_schedule_when_an_epoch_is_one_batch_and_differs_otherwise() {
    let onecycle = |batch_size, lr_per_batch| TrainConfig {
        batch_size,
        lr_per_batch,
        head: lenet5_core::nn::Head::Logits,
        sgd: lenet5_core::optim::Sgd { lr: 0.05, ..recipe().sgd },
        ..config(LrSchedule::OneCycle { warmup: 1 })
    };
    // 96 images in one batch: one step per epoch either way, so the same rates and the same bits.
    let (by_epoch, epoch_state) = train(onecycle(96, false));
    let (by_batch, batch_state) = train(onecycle(96, true));
    assert_eq!(by_epoch, by_batch);
    assert_eq!(epoch_state.history, batch_state.history);
    // 6 batches an epoch: the rate moves within the epochs, and each epoch records its first batch's rate.
    let (by_epoch, _) = train(onecycle(16, false));
    let (by_batch, state) = train(onecycle(16, true));
    assert_ne!(by_epoch, by_batch);
    let recorded: Vec<f64> = state.history.iter().map(|m| m.lr.unwrap()).collect();
    let expected: Vec<f64> =
        (0..4).map(|e| LrSchedule::OneCycle { warmup: 1 }.rate_at(0.05, e * 6, 24, 6) as f64).collect();
    assert_eq!(recorded, expected);
    assert!(recorded[0] < 0.05 / 20.0 && recorded[1] < 0.05 && recorded[1] > recorded[2]);
}

#[test]
fn label_smoothing_changes_the_training_only_and_zero_is_the_recipe() {
    let smoothed = |label_smoothing| TrainConfig { label_smoothing, ..config(LrSchedule::Constant) };
    let (recipe_bits, recipe_state) = train(config(LrSchedule::Constant));
    let (zero, _) = train(smoothed(0.0));
    assert_eq!(recipe_bits, zero);
    let (with, state) = train(smoothed(0.1));
    assert_ne!(recipe_bits, with);
    assert_ne!(state.history[0].train_loss, recipe_state.history[0].train_loss);
    // The val figures stay plain cross-entropy: those of evaluating the weights.
    let mut evaluator = lenet5_core::train::Evaluator::new(1).unwrap();
    let plain = evaluator.evaluate(&with, recipe().head, &bands(40), recipe().batch_size);
    assert_eq!((state.history[3].val_loss, state.history[3].val_acc), (plain.loss, plain.accuracy));
    assert!(matches!(smoothed(1.0).check(), Err(lenet5_core::Error::Setting { setting: "label_smoothing", .. })));
}

#[test]
fn a_run_evaluated_every_n_epochs_and_after_the_last_never_chooses_an_epoch_it_did_not_evaluate() {
    let every = |eval_every| TrainConfig { epochs: 5, eval_every, ..recipe() };
    let (all_bits, all) = train(every(1));
    let (sparse_bits, sparse) = train(every(2));
    let (last_bits, last) = train(every(0));
    // Evaluating never changes the weights.
    assert!(all_bits == sparse_bits && all_bits == last_bits);
    let evaluated = |s: &lenet5_core::run::TrainState| {
        s.history.iter().filter(|m| !m.val_acc.is_nan()).map(|m| m.epoch).collect::<Vec<_>>()
    };
    assert_eq!(evaluated(&all), [1, 2, 3, 4, 5]);
    assert_eq!(evaluated(&sparse), [2, 4, 5]);
    assert_eq!(evaluated(&last), [5]);
    assert_eq!(last.best_epoch, Some(5));
    assert!(sparse.best_epoch.is_some_and(|e| [2, 4, 5].contains(&e)));
    // The figures of an evaluated epoch are those of the run that evaluates every epoch.
    assert_eq!(last.history[4].val_acc, all.history[4].val_acc);
    assert!(last.history[..4].iter().all(|m| m.val_loss.is_nan() && m.val_acc.is_nan()));
}
