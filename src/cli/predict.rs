//! `lenet5 predict`: classify image files, or test-set images by index.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use lenet5::preprocess::{Digit, Preprocess, digit_to_image, load_image};
use lenet5::text::printable;
use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::fs::create_dir;
use lenet5_core::infer::Prediction;
use lenet5_core::nn::model::IMAGE_LEN;

use lenet5::deploy::{Engine, Weights};
use lenet5_core::nn::Head;

use super::{CliResult, DataArgs, WeightsArg};

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub weights: WeightsArg,
    /// Image files (PNG, JPEG, BMP, GIF, PGM; any size, colour or grey, dark-on-light or light-on-dark).
    #[arg(value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Test-set images to predict, by index (prints predicted and actual class).
    #[arg(long, value_name = "N", num_args = 1.., value_delimiter = ',')]
    pub test_index: Vec<usize>,
    /// How many of the most probable classes to show.
    #[arg(long, default_value_t = 3)]
    pub top_k: usize,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write the 28x28 image the network saw for each file into this directory (as PNG).
    #[arg(long, value_name = "DIR")]
    pub save_preprocessed: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

fn report(json: bool, name: &str, p: &Prediction, names: &[String], k: usize, actual: Option<usize>) {
    let top = p.top_k(k.clamp(1, 10));
    if json {
        let top: Vec<_> = top
            .iter()
            .map(|&(c, prob)| serde_json::json!({"class": names[c], "index": c, "probability": prob}))
            .collect();
        let mut v = serde_json::json!({"input": name, "predicted": names[p.class], "top": top});
        if let Some(a) = actual {
            v["actual"] = names[a].clone().into();
        }
        println!("{v}");
    } else {
        // Names from the checkpoint and the command line, made safe for the terminal.
        let class = |c: usize| printable(&names[c]).into_owned();
        let name = printable(name);
        let list: Vec<String> = top.iter().map(|&(c, prob)| format!("{} ({:.3})", class(c), prob)).collect();
        match actual {
            Some(a) => println!(
                "{name}: predict: {}, actual: {}{}   top: {}",
                class(p.class),
                class(a),
                if a == p.class { "" } else { "  (wrong)" },
                list.join("  ")
            ),
            None => println!("{name}: {}", list.join("  ")),
        }
    }
}

pub fn run(a: PredictArgs) -> CliResult {
    if a.images.is_empty() && a.test_index.is_empty() {
        return Err("give image files to predict, or --test-index N".into());
    }
    let weights = Weights::load(&a.weights.weights, Head::Sigmoid)?;
    let ck: Checkpoint = weights.description();
    // Pictures are prepared as the network's training images were (MNIST's framing unless it says otherwise).
    let preprocess = ck.metadata.get("data.preprocess").and_then(|p| Preprocess::parse(p)).unwrap_or(Preprocess::Mnist);
    let names = ck.class_names.clone();
    let mut engine = Engine::from(weights);
    if let Some(dir) = &a.save_preprocessed {
        create_dir(dir)?;
    }
    // The files read, and those written, so that no output overwrites an input or another output.
    let inputs: HashSet<PathBuf> = a.images.iter().filter_map(|p| std::fs::canonicalize(p).ok()).collect();
    let mut written = HashSet::new();
    let mut failures = 0;
    for path in &a.images {
        let digit = match load_image(path, preprocess) {
            Ok(d) => d,
            Err(e) => {
                // One bad file does not stop the others.
                if a.json {
                    println!("{}", serde_json::json!({"input": path.display().to_string(), "error": e.to_string()}));
                }
                eprintln!("error: {e}");
                failures += 1;
                continue;
            }
        };
        if let Some(dir) = &a.save_preprocessed {
            let out = preprocessed_name(dir, path, &inputs, &mut written);
            let mut bytes = Vec::new();
            digit_to_image(&digit)
                .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
                .map_err(|e| format!("{}: {e}", out.display()))?;
            lenet5_core::fs::write_atomic(&out, &bytes)?;
        }
        let p = engine.predict(&digit);
        report(a.json, &path.display().to_string(), &p, &names, a.top_k, None);
    }
    if !a.test_index.is_empty() {
        let test = a.data.load_test_for(&ck)?;
        for &i in &a.test_index {
            if i >= test.len() {
                return Err(format!("--test-index {i} is out of range: the test set has {} images", test.len()).into());
            }
            let mut digit: Digit = [0.0; IMAGE_LEN];
            let mut label = [0 as lenet5_core::base::Label];
            test.gather(&[i as u32], &mut digit, &mut label);
            let p = engine.predict(&digit);
            report(a.json, &format!("test[{i}]"), &p, &names, a.top_k, Some(label[0] as usize));
        }
    }
    if failures > 0 {
        return Err(format!("{failures} of {} images could not be read", a.images.len()).into());
    }
    Ok(())
}

/// Where `--save-preprocessed` puts the picture made of `input`: `STEM.28x28.png` in `dir`, or `STEM-2.28x28.png`
/// and so on when that name is taken by another output of this run (two inputs of the same stem) or an input.
fn preprocessed_name(dir: &Path, input: &Path, inputs: &HashSet<PathBuf>, written: &mut HashSet<PathBuf>) -> PathBuf {
    let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    let taken = |p: &Path| written.contains(p) || std::fs::canonicalize(p).is_ok_and(|c| inputs.contains(&c));
    let mut out = dir.join(format!("{stem}.28x28.png"));
    let mut n = 2;
    while taken(&out) {
        out = dir.join(format!("{stem}-{n}.28x28.png"));
        n += 1;
    }
    written.insert(out.clone());
    out
}
