//! `lenet5 import` and `lenet5 export`: PyTorch `.pth` in, ONNX out.

use std::path::{Path, PathBuf};

use lenet5::interop::{onnx, pth};
use lenet5_core::fs::write_atomic;

use super::{CliResult, HeadArg, WeightsArg, load_weights};

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
pub struct ExportArgs {
    #[command(flatten)]
    pub weights: WeightsArg,
    /// Where to write the ONNX model (opset 13, dynamic batch axis).
    #[arg(long, value_name = "FILE")]
    pub onnx: PathBuf,
}

pub fn export(a: ExportArgs) -> CliResult {
    refuse_same_file(&a.weights.path(), &a.onnx)?;
    let ck = load_weights(&a.weights)?;
    write_atomic(&a.onnx, &onnx::export(&ck))?;
    println!(
        "{} -> {} (ONNX opset {}, input [N,1,28,28], output [N,{}], head {})",
        a.weights.weights.display(),
        a.onnx.display(),
        onnx::OPSET,
        ck.classes(),
        ck.head.name()
    );
    Ok(())
}
