//! `lenet5 eval`: forward-only loss and accuracy of saved weights on the test set.

use std::time::Instant;

use lenet5_core::train::Evaluator;

use super::{CliResult, DataArgs, WeightsArg, load_weights, threads};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub weights: WeightsArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// Batch size for the per-batch means (the loss and accuracy are means of per-batch values).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EvalArgs) -> CliResult {
    if a.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    let ck = load_weights(&a.weights)?;
    let id = a.data.id(ck.metadata.get("dataset").map(String::as_str));
    let test = a.data.load_test_for(&ck)?;
    let threads = threads(a.threads)?;
    let mut evaluator = Evaluator::new(threads)?;
    let t0 = Instant::now();
    let r = evaluator.evaluate(&ck.params, ck.head, &test, a.batch_size);
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"loss": r.loss, "accuracy": r.accuracy, "correct": r.correct, "total": r.total,
                               "dataset": id.name(), "seconds": secs})
        );
    } else {
        println!(
            "{}: loss {:.4}  accuracy {:.4}  ({}/{} correct) on {} test images in {:.0} ms",
            a.weights.weights.display(),
            r.loss,
            r.accuracy,
            r.correct,
            r.total,
            id.name(),
            secs * 1e3
        );
    }
    Ok(())
}
