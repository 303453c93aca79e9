//! `lenet5 import` and `lenet5 export`: PyTorch `.pth` in, ONNX out.

use std::path::{Path, PathBuf};

use lenet5::interop::{onnx, pth};
use lenet5_core::fs::write_atomic;

use lenet5::deploy::Weights;
use lenet5_core::nn::Head;

use super::{CliResult, HeadArg, WeightsArg};

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// A PyTorch state_dict saved with `torch.save(model.state_dict(), PATH)` (zip or legacy format).
    #[arg(value_name = "MODEL.pth")]
    pub input: PathBuf,
    /// Where to write the safetensors checkpoint.
    #[arg(value_name = "OUT.safetensors")]
    pub output: PathBuf,
    /// The head the PyTorch model was trained with (the tutorial's is sigmoid).
    #[arg(long, value_enum, default_value = "sigmoid")]
    pub head: HeadArg,
}

pub fn import(a: ImportArgs) -> CliResult {
    refuse_same_file(&a.input, &a.output)?;
    let ck = pth::read_pth(&a.input, a.head.into())?;
    ck.save(&a.output)?;
    println!("{} -> {} ({} classes, head {})", a.input.display(), a.output.display(), ck.classes(), ck.head.name());
    Ok(())
}

/// Refuses to write `output` over `input` (the same file under any name), which would lose the input.
pub fn refuse_same_file(input: &Path, output: &Path) -> CliResult {
    let same = match (std::fs::canonicalize(input), std::fs::canonicalize(output)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(format!("{}: is also the input; write the output to another file", output.display()).into());
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
#[group(id = "format", required = true, multiple = false, args = ["onnx", "c"])]
pub struct ExportArgs {
    #[command(flatten)]
    pub weights: WeightsArg,
    /// Where to write the ONNX model (opset 13, dynamic batch axis); int8 weights are written as QDQ (int8
    /// initializers, QuantizeLinear and DequantizeLinear).
    #[arg(long, value_name = "FILE")]
    pub onnx: Option<PathBuf>,
    /// Where to write the int8 network as C99 (lenet5_model.h and lenet5_model.c) for microcontrollers: from int8
    /// weights (`lenet5 quantize`), or float weights quantized on the way.
    #[arg(long, value_name = "DIR")]
    pub c: Option<PathBuf>,
    /// Write the C files into a directory that is not empty.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub quantize: super::deploy::CalibrationArgs,
}

pub fn export(a: ExportArgs) -> CliResult {
    match (&a.onnx, &a.c) {
        (_, Some(dir)) => super::deploy::export_c(&a.weights, dir, a.force, &a.quantize),
        (Some(path), None) => export_onnx(&a.weights, path),
        (None, None) => unreachable!("clap requires --onnx or --c"),
    }
}

fn export_onnx(weights: &WeightsArg, path: &Path) -> CliResult {
    refuse_same_file(&weights.path(), path)?;
    let (bytes, form, classes, head) = match Weights::load(&weights.weights, Head::Sigmoid)? {
        Weights::Float(ck) => (onnx::export(&ck), "float", ck.classes(), ck.head),
        Weights::Int8(q) => (onnx::export_int8(&q), "int8 as QDQ", q.classes(), q.head),
    };
    write_atomic(path, &bytes)?;
    println!(
        "{} -> {} (ONNX opset {}, {form}, input [N,1,28,28], output [N,{classes}], head {})",
        weights.weights.display(),
        path.display(),
        onnx::OPSET,
        head.name()
    );
    Ok(())
}
