//! The training session the page drives, run natively: trained a few batches per call it gives the bits of one
//! call per epoch (with the page's warm-up between the calls, too), its weights download as a checkpoint the
//! engine reads, and every misuse is a typed error.

use std::path::{Path, PathBuf};

use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::data::DatasetId;
use lenet5_web::session::{Session, SessionError};

fn mnist() -> [Vec<u8>; 4] {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/MNIST/raw");
    DatasetId::FILES.map(|f| std::fs::read(dir.join(format!("{f}.gz"))).unwrap())
}

const SETTINGS: &str = r#"{"epochs": 2, "head": "logits", "lr": 0.05, "train_limit": 2000, "test_limit": 500}"#;

/// A session that has trained all of [`SETTINGS`], `batches_per_call` batches at a time, with the page's
/// warm-up ([`Session::warm_up`]) before each call where `warm_up` says so.
fn trained(batches_per_call: usize, warm_up: bool) -> Session {
    let mut s = Session::default();
    assert_eq!(s.load("mnist", mnist()).unwrap(), (60_000, 10_000));
    s.configure(SETTINGS).unwrap();
    let clock = || 0.0;
    while !s.status().unwrap().finished {
        while (!warm_up || Session::warm_up(2).unwrap() == 32) && s.train(batches_per_call, &clock).unwrap() > 0 {}
        s.finish_epoch(&clock).unwrap();
    }
    s
}

#[test]
fn a_few_batches_per_call_give_the_bits_of_a_whole_epoch_per_call() {
    let (few, whole) = (trained(3, true), trained(1000, false));
    assert_eq!(few.params().unwrap(), whole.params().unwrap());
    assert_eq!(few.velocity().unwrap(), whole.velocity().unwrap());
    let status = few.status().unwrap();
    assert_eq!((status.epoch, status.batch, status.batches, status.history.len()), (2, 125, 125, 2));
    assert_eq!(status.images_seen, 4000);
    assert!(status.best_val_acc.unwrap() > 0.5, "{status:?}");

    // The download is the best epoch's weights, as `lenet5 train` writes them.
    let ck = Checkpoint::from_bytes(&few.checkpoint().unwrap(), Path::new("download.safetensors")).unwrap();
    assert_eq!(ck.metadata["epoch"], status.best_epoch.unwrap().to_string());
    assert_eq!(ck.metadata["dataset"], "mnist");
}

#[test]
fn every_misuse_is_a_typed_error_with_a_message_for_the_page() {
    let mut s = Session::default();
    let clock = || 0.0;
    assert!(matches!(s.configure("{}"), Err(SessionError::NoData)));
    assert!(matches!(s.train(1, &clock), Err(SessionError::NoRun)));
    assert!(matches!(s.status(), Err(SessionError::NoRun)));

    // A damaged file names itself.
    let mut files = mnist();
    files[1].truncate(100);
    let e = s.load("mnist", files).unwrap_err();
    assert!(matches!(e, SessionError::Engine(_)) && e.to_string().contains("train-labels-idx1-ubyte"), "{e}");

    s.load("mnist", mnist()).unwrap();
    for (settings, phrase) in [
        (r#"{"epochs": "many"}"#, "setting epochs: invalid type"),
        (r#"{"learning_rate": 0.1}"#, "unknown setting `learning_rate` (did you mean `lr`?)"),
        (r#"{"head": "softmax"}"#, "unknown head `softmax`"),
        (r#"{"batch_size": 0}"#, "batch_size"),
        (r#"{"lr": -1}"#, "invalid setting: lr must be a positive number"),
        ("[1]", "expected an object"),
        ("not json", "not JSON"),
    ] {
        let e = s.configure(settings).unwrap_err();
        assert!(e.to_string().contains(phrase), "{settings}: {e}");
    }

    s.configure(SETTINGS).unwrap();
    assert_eq!(s.train(1, &clock).unwrap(), 1);
    assert!(matches!(s.finish_epoch(&clock), Err(SessionError::EpochUnfinished)));
    assert!(matches!(s.predict(vec![0; 10], 4, 4), Err(SessionError::DrawingSize)));
    let blank = s.predict(vec![0; 16], 4, 4).unwrap_err();
    assert!(matches!(blank, SessionError::Drawing(_)), "{blank}");
}
