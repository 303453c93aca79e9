//! `lenet5 quantize` and `lenet5 export --c`: int8 weights, and C99 for microcontrollers.

use std::path::{Path, PathBuf};

use lenet5::deploy::{Weights, data_for, quantize, write_c};
use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::nn::Head;
use lenet5_core::quant::QuantModel;
use lenet5_core::train::Evaluator;

use super::interop::refuse_same_file;
use super::{CliResult, DataArgs, TerminalNotices, WeightsArg, threads};

/// How float weights are quantized: the calibration images and where they come from.
#[derive(clap::Args, Debug, Clone)]
pub struct CalibrationArgs {
    /// Training images the activations' ranges are measured on, when float weights are quantized.
    #[arg(long, value_name = "N", default_value_t = QuantModel::DEFAULT_CALIBRATION)]
    pub calibration: usize,
    /// Seed of the draw of the calibration images.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub calibration_seed: u64,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    #[command(flatten)]
    pub weights: WeightsArg,
    /// Where to write the int8 network (safetensors, read by eval and export --c).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub calibration: CalibrationArgs,
}

/// The float weights of `--weights`, refused when they are int8 already.
fn float_weights(w: &WeightsArg) -> CliResult<Checkpoint> {
    match Weights::load(&w.weights, Head::Sigmoid)? {
        Weights::Float(ck) => Ok(ck),
        Weights::Int8(_) => Err(format!("{}: int8 already; quantize float weights", w.weights.display()).into()),
    }
}

fn quantized(ck: &Checkpoint, c: &CalibrationArgs) -> CliResult<QuantModel> {
    Ok(quantize(ck, &c.data.source(), c.calibration, c.calibration_seed, &TerminalNotices::new())?)
}

pub fn run(a: QuantizeArgs) -> CliResult {
    refuse_same_file(&a.weights.path(), &a.out)?;
    let ck = float_weights(&a.weights)?;
    let c = &a.calibration;
    // Read once: the training images calibrate, the test images measure both networks.
    let data = data_for(&ck, &c.data.source(), &TerminalNotices::new())?;
    let q = QuantModel::quantize(&ck, &data.train, c.calibration, c.calibration_seed)?;
    q.save(&a.out)?;
    let test = data.test;
    let batch_size = lenet5::training::eval_batch_size(&ck);
    let threads = threads(None)?;
    let float = Evaluator::new(threads)?.evaluate(&ck.params, ck.head, &test, batch_size);
    let (int8, _) = q.evaluate(&test, batch_size, threads);
    println!(
        "{} -> {} (int8, {} classes, calibrated on {})",
        a.weights.weights.display(),
        a.out.display(),
        q.classes(),
        q.metadata.get("calibration").map_or("?", String::as_str)
    );
    println!(
        "test accuracy: float {:.4} ({}/{}), int8 {:.4} ({}/{}), {:+.2} points",
        float.accuracy,
        float.correct,
        float.total,
        int8.accuracy,
        int8.correct,
        int8.total,
        (int8.accuracy - float.accuracy) * 100.0
    );
    Ok(())
}

/// `lenet5 export --c DIR`.
pub fn export_c(w: &WeightsArg, dir: &Path, force: bool, c: &CalibrationArgs) -> CliResult {
    let q = match Weights::load(&w.weights, Head::Sigmoid)? {
        Weights::Int8(q) => *q,
        Weights::Float(ck) => quantized(&ck, c)?,
    };
    let [header, source] = write_c(&q, dir, force)?;
    let weights = q.const_bytes();
    println!(
        "{} -> {} and {} (C99, int8, {} classes; {weights} bytes of weights, biases and requantization in const arrays)",
        w.weights.display(),
        header.display(),
        source.display(),
        q.classes()
    );
    match lenet5::deploy::cortex_m4_footprint(dir) {
        Ok(f) => println!(
            "Cortex-M4 (arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os): flash {} bytes, RAM {} bytes (static {}, stack \
             at most {})",
            f.flash,
            f.static_ram + f.stack,
            f.static_ram,
            f.stack
        ),
        Err(why) => println!("Cortex-M4 footprint not measured: {why}"),
    }
    Ok(())
}
