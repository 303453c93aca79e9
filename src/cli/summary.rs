//! `lenet5 summary`: the architecture, shapes, parameters and FLOPs.

use lenet5_core::summary::layers;

use super::{CliResult, HeadArg};

#[derive(clap::Args, Debug)]
pub struct SummaryArgs {
    /// Batch size N for the shapes and FLOPs.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// The head to show.
    #[arg(long, value_enum, default_value = "sigmoid")]
    pub head: HeadArg,
    /// Classes K of the output layer (10 for MNIST).
    #[arg(long, default_value_t = 10, value_name = "K")]
    pub classes: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn run(a: SummaryArgs) -> CliResult {
    let max = lenet5_core::train::TrainConfig::MAX_BATCH_SIZE;
    if a.batch == 0 || a.batch > max {
        return Err(format!("--batch must be from 1 to {max}, got {}", a.batch).into());
    }
    let (min, max) = (lenet5_core::base::MIN_CLASSES, lenet5_core::base::MAX_CLASSES);
    if !(min..=max).contains(&a.classes) {
        return Err(format!("--classes must be from {min} to {max}, got {}", a.classes).into());
    }
    let rows = layers(a.batch, a.head.into(), a.classes);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<13} {:<36} {:<18} {:>8}  {:<18} {:>12}",
        "layer", "type", "output shape", "params", "formula", "FLOPs"
    );
    println!("{}", "-".repeat(110));
    for r in &rows {
        let shape = format!("{:?}", r.output_shape);
        let params = if r.params > 0 { group(r.params) } else { "-".into() };
        let flops = if r.flops > 0 { group(r.flops) } else { "-".into() };
        println!("{:<13} {:<36} {:<18} {:>8}  {:<18} {:>12}", r.name, r.layer, shape, params, r.formula, flops);
    }
    println!("{}", "-".repeat(110));
    let total: usize = rows.iter().map(|r| r.params).sum();
    let flops: usize = rows.iter().map(|r| r.flops).sum();
    println!(
        "total: {} parameters ({} KiB as f32), {} forward FLOPs for a batch of {}",
        group(total),
        total * 4 / 1024,
        group(flops),
        a.batch
    );
    Ok(())
}
