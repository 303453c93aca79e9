//! `lenet5 plot`, `lenet5 confusion` and `lenet5 inspect`: pictures of a run, of the mistakes, and of what the
//! network sees.

use std::path::{Path, PathBuf};

use lenet5::preprocess::load_digit;
use lenet5::text::printable;
use lenet5::viz::{Tile, plot_confusion, plot_curves, plot_grid};
use lenet5_core::infer::Predictor;
use lenet5_core::nn::model::{CONV1, CONV2, IMAGE_SIZE, POOL1, POOL2};
use lenet5_core::nn::params::Tensors;
use lenet5_core::run::{RunDir, read_metrics};
use lenet5_core::train::Evaluator;

use super::{CliResult, DataArgs, WeightsArg, load_weights, threads};

#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// A run directory (holding metrics.jsonl) or a metrics.jsonl file.
    #[arg(value_name = "RUN_DIR")]
    pub run: PathBuf,
    /// Output directory for curves.png and curves.svg (default: the run directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

fn out_dir(flag: &Option<PathBuf>, default: &Path) -> CliResult<PathBuf> {
    let dir = flag.clone().unwrap_or_else(|| default.to_path_buf());
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    lenet5_core::fs::create_dir(&dir)?;
    Ok(dir)
}

pub fn plot(a: PlotArgs) -> CliResult {
    let (log, dir) =
        if a.run.is_dir() { (RunDir::new(&a.run).metrics(), a.run.clone()) } else { (a.run.clone(), parent(&a.run)) };
    let history = read_metrics(&log)?;
    let dir = out_dir(&a.out, &dir)?;
    let (png, svg) = (dir.join("curves.png"), dir.join("curves.svg"));
    plot_curves(&history, &png, &svg)?;
    println!("{} epochs plotted: {} and {}", history.len(), png.display(), svg.display());
    Ok(())
}

fn parent(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

#[derive(clap::Args, Debug)]
pub struct ConfusionArgs {
    #[command(flatten)]
    pub weights: WeightsArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// Also draw the N worst mistakes (highest loss) as a labelled grid.
    #[arg(long, value_name = "N")]
    pub misclassified: Option<usize>,
    /// Output directory for the pictures (default: the weights' directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn confusion(a: ConfusionArgs) -> CliResult {
    let ck = load_weights(&a.weights)?;
    let test = a.data.load_test_for(&ck)?;
    let threads = threads(a.threads)?;
    let mut ev = Evaluator::new(threads)?;
    let r = ev.evaluate(&ck.params, ck.head, &test, lenet5::training::eval_batch_size(&ck));
    let classes = ck.classes();
    let mut counts = vec![vec![0usize; classes]; classes];
    for (&p, &l) in ev.predictions.iter().zip(&test.labels) {
        counts[l as usize][p as usize] += 1;
    }
    // Names from the checkpoint, made safe for the terminal and the pictures.
    let names: Vec<String> = ck.class_names.iter().map(|n| printable(n).into_owned()).collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(1).max(6);
    println!("confusion matrix on {} test images (rows: actual, columns: predicted)", test.len());
    print!("{:>width$} ", "");
    for c in 0..classes {
        print!("{c:>6}");
    }
    println!("{:>10}", "accuracy");
    for (actual, row) in counts.iter().enumerate() {
        print!("{:>width$} ", names[actual]);
        for &c in row {
            print!("{c:>6}");
        }
        let total = row.iter().sum::<usize>();
        let acc = if total > 0 { row[actual] as f64 / total as f64 } else { 0.0 };
        println!("{acc:>10.4}");
    }
    println!("overall: {}/{} correct ({:.4})", r.correct, r.total, r.correct as f64 / r.total.max(1) as f64);
    let dir = out_dir(&a.out, &parent(&a.weights.path()))?;
    let png = dir.join("confusion.png");
    plot_confusion(&counts, &names, &png)?;
    println!("heat map: {}", png.display());
    if let Some(n) = a.misclassified {
        let mut wrong: Vec<usize> = (0..test.len()).filter(|&i| ev.predictions[i] != test.labels[i]).collect();
        wrong.sort_by(|&x, &y| ev.losses[y].total_cmp(&ev.losses[x]));
        wrong.truncate(n);
        if wrong.is_empty() {
            println!("no mistakes to draw");
            return Ok(());
        }
        let images: Vec<Vec<f32>> =
            wrong.iter().map(|&i| test.image(i).iter().map(|&p| p as f32 / 255.0).collect()).collect();
        let tiles: Vec<Tile> = wrong
            .iter()
            .zip(&images)
            .map(|(&i, img)| Tile {
                values: img,
                width: IMAGE_SIZE,
                height: IMAGE_SIZE,
                label: format!("#{i} {}>{}", names[test.labels[i] as usize], names[ev.predictions[i] as usize]),
                range: Some((0.0, 1.0)),
            })
            .collect();
        let png = dir.join("misclassified.png");
        plot_grid(&tiles, 8, 3, "worst mistakes: #index actual>predicted", &png)?;
        println!("{} worst mistakes: {}", wrong.len(), png.display());
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub weights: WeightsArg,
    /// The image to look at.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// Output directory for the pictures (default: ./inspect).
    #[arg(long, value_name = "DIR", default_value = "inspect")]
    pub out: PathBuf,
}

pub fn inspect(a: InspectArgs) -> CliResult {
    let ck = load_weights(&a.weights)?;
    let digit = load_digit(&a.image)?;
    let dir = out_dir(&Some(a.out.clone()), &a.out)?;
    let params = ck.params.clone();
    let mut predictor = Predictor::new(ck);
    let (p, acts) = predictor.predict_with_activations(&digit);
    let weights = Tensors::of(&params);
    let (c1w, c2w) = (weights.conv1_weight, weights.conv2_weight);
    let k = CONV1.kernel;
    let kk = k * k;
    let mut written = Vec::new();
    let mut grid = |name: &str, tiles: Vec<Tile>, columns: usize, scale: u32, title: &str| -> CliResult {
        let path = dir.join(name);
        plot_grid(&tiles, columns, scale, title, &path)?;
        written.push(path);
        Ok(())
    };
    grid(
        "input.png",
        vec![Tile {
            values: &digit,
            width: IMAGE_SIZE,
            height: IMAGE_SIZE,
            label: format!("predict: {}", printable(predictor.class_name(p.class))),
            range: Some((0.0, 1.0)),
        }],
        1,
        6,
        "what the network saw",
    )?;
    let tiles = (0..CONV1.out_channels)
        .map(|o| Tile { values: &c1w[o * kk..(o + 1) * kk], width: k, height: k, label: format!("{o}"), range: None })
        .collect();
    grid("kernels_conv1.png", tiles, 6, 16, "conv1 kernels (6 of 1x5x5)")?;
    let tiles = (0..CONV2.out_channels * CONV2.in_channels)
        .map(|i| Tile {
            values: &c2w[i * kk..(i + 1) * kk],
            width: k,
            height: k,
            label: format!("{}.{}", i / CONV2.in_channels, i % CONV2.in_channels),
            range: None,
        })
        .collect();
    grid("kernels_conv2.png", tiles, 12, 10, "conv2 kernels (out.in, 16 of 6x5x5)")?;
    for (name, values, channels, size, scale) in [
        ("features_conv1.png", &acts.conv1, CONV1.out_channels, CONV1.out_size(), 4),
        ("features_pool1.png", &acts.pool1, POOL1.channels, POOL1.out_size(), 6),
        ("features_conv2.png", &acts.conv2, CONV2.out_channels, CONV2.out_size(), 8),
        ("features_pool2.png", &acts.pool2, POOL2.channels, POOL2.out_size(), 14),
    ] {
        let plane = size * size;
        let tiles = (0..channels)
            .map(|c| Tile {
                values: &values[c * plane..(c + 1) * plane],
                width: size,
                height: size,
                label: format!("{c}"),
                range: None,
            })
            .collect();
        let title = format!("{} feature maps ({channels} of {size}x{size})", name.trim_end_matches(".png"));
        grid(name, tiles, 8, scale, &title)?;
    }
    let (image, class) = (a.image.display().to_string(), predictor.class_name(p.class));
    println!("{}: predict {} ({:.3})", printable(&image), printable(class), p.probabilities[p.class]);
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
