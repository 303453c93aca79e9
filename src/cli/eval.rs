//! `lenet5 eval`: forward-only loss and accuracy of saved weights on the test set.

use std::time::Instant;

use lenet5::deploy::Weights;
use lenet5_core::nn::Head;
use lenet5_core::train::Evaluator;

use super::{CliResult, DataArgs, WeightsArg, threads};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub weights: WeightsArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// Batch size of the loss, a mean of per-batch means [default: the one the weights were trained with, as
    /// their checkpoint records it, else the recipe's].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EvalArgs) -> CliResult {
    let weights = Weights::load(&a.weights.weights, Head::Sigmoid)?;
    let ck = weights.description();
    let batch_size = a.batch_size.unwrap_or_else(|| lenet5::training::eval_batch_size(&ck));
    if batch_size == 0 || batch_size > lenet5_core::train::TrainConfig::MAX_BATCH_SIZE {
        return Err(format!(
            "--batch-size must be from 1 to {}, got {batch_size}",
            lenet5_core::train::TrainConfig::MAX_BATCH_SIZE
        )
        .into());
    }
    let id = a.data.source().id_for(&ck)?;
    let test = a.data.load_test_for(&ck)?;
    let threads = threads(a.threads)?;
    let t0 = Instant::now();
    let r = match &weights {
        Weights::Float(ck) => Evaluator::new(threads)?.evaluate(&ck.params, ck.head, &test, batch_size),
        Weights::Int8(q) => q.evaluate(&test, batch_size, threads).0,
    };
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"loss": r.loss, "accuracy": r.accuracy, "correct": r.correct, "total": r.total,
                               "dataset": id.name(), "seconds": secs, "int8": matches!(weights, Weights::Int8(_))})
        );
    } else {
        println!(
            "{}: loss {:.4}  accuracy {:.4}  ({}/{} correct) on {} test images in {:.0} ms",
            lenet5::text::printable(&a.weights.weights.display().to_string()),
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
