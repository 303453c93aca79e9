//! Pictures: training curves (PNG and SVG), the confusion matrix as a heat map, and labelled grids of small
//! images (mistakes, kernels, feature maps). Rendered in memory and written atomically.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::{Error, Result};
use lenet5_core::fs::write_atomic;
use lenet5_core::train::EpochMetrics;

const FONT: &str = "sans-serif";

/// Registers the bundled font (DejaVu Sans Mono) once, so text renders the same on every machine.
fn ensure_font() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // The bytes are a valid TrueType font compiled into the binary; registering cannot fail at run time.
        let _ = register_font(FONT, FontStyle::Normal, include_bytes!("../assets/fonts/DejaVuSansMono.ttf"));
    });
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> Error {
    lenet5_core::Error::format(path, format!("cannot draw: {e}")).into()
}

/// Encodes an RGB buffer as PNG and writes it atomically.
fn save_png(path: &Path, rgb: Vec<u8>, w: u32, h: u32) -> Result<()> {
    let img = image::RgbImage::from_raw(w, h, rgb).expect("buffer matches its size");
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).map_err(|e| draw_err(path, e))?;
    Ok(write_atomic(path, &bytes)?)
}

fn curves_on<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, history: &[EpochMetrics]) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let last = history.last().map_or(1, |m| m.epoch).max(2) as f64;
    /// A named line: how to read it from an epoch, and its colour.
    type Line = (&'static str, fn(&EpochMetrics) -> f64, RGBColor);
    let mut series: Vec<(&str, Vec<Line>)> = vec![
        ("loss", vec![("train_loss", |m| m.train_loss, BLUE), ("val_loss", |m| m.val_loss, RED)]),
        ("accuracy", vec![("train_acc", |m| m.train_acc, BLUE), ("val_acc", |m| m.val_acc, RED)]),
    ];
    if lr_moves(history) {
        series.push(("learning rate", vec![("lr", |m| m.lr.unwrap_or(f64::NAN), GREEN)]));
    }
    let panels = root.split_evenly((1, series.len()));
    for (panel, (title, lines)) in panels.iter().zip(series) {
        let values: Vec<f64> =
            history.iter().flat_map(|m| lines.iter().map(move |(_, f, _)| f(m))).filter(|&v| plottable(v)).collect();
        let (lo, hi) = match values.is_empty() {
            true => (0.0, 1.0),
            false => values.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v))),
        };
        let pad = ((hi - lo) * 0.05).max(1e-3);
        let mut chart = ChartBuilder::on(panel)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(1.0..last, (lo - pad)..(hi + pad))
            .map_err(|e| e.to_string())?;
        let mut mesh = chart.configure_mesh();
        let scientific = |v: &f64| format!("{v:.1e}");
        if title == "learning rate" {
            mesh.y_label_formatter(&scientific);
        }
        mesh.x_desc("epoch").label_style((FONT, 13)).draw().map_err(|e| e.to_string())?;
        for (name, f, color) in lines {
            let points: Vec<_> =
                history.iter().map(|m| (m.epoch as f64, f(m))).filter(|&(_, v)| plottable(v)).collect();
            // Epochs a run did not evaluate (eval_every) leave gaps: the points it has are marked.
            let marks = if points.len() < history.len() { 4 } else { 0 };
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)).point_size(marks))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Whether a figure can go on an axis: NaN, infinities and values beyond 1e12 (a loss that blew up) are left
/// out, since an axis that spans them has no ticks to draw (and drawing them once never ended).
fn plottable(v: f64) -> bool {
    v.is_finite() && v.abs() <= 1e12
}

/// Whether the run's learning rate changed from epoch to epoch (a schedule), which earns it a panel.
fn lr_moves(history: &[EpochMetrics]) -> bool {
    let mut rates = history.iter().filter_map(|m| m.lr);
    rates.next().is_some_and(|first| rates.any(|r| r != first))
}

/// Loss and accuracy per epoch, train and validation, and the learning rate when a schedule moved it, as `png`
/// and `svg`.
pub fn plot_curves(history: &[EpochMetrics], png: &Path, svg: &Path) -> Result<()> {
    ensure_font();
    if history.is_empty() {
        return Err(Error::NothingToDraw("the metrics log holds no finished epoch yet"));
    }
    let (w, h) = (if lr_moves(history) { 1500u32 } else { 1100 }, 420u32);
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        curves_on(&root, history).map_err(|e| draw_err(png, e))?;
    }
    save_png(png, rgb, w, h)?;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (w, h)).into_drawing_area();
        curves_on(&root, history).map_err(|e| draw_err(svg, e))?;
    }
    Ok(write_atomic(svg, text.as_bytes())?)
}

/// The val_acc curve of every trial of a sweep, each labelled by its settings, as `png`.
pub fn plot_sweep(trials: &[(String, Vec<EpochMetrics>)], png: &Path) -> Result<()> {
    ensure_font();
    if trials.iter().all(|(_, h)| h.is_empty()) {
        return Err(Error::NothingToDraw("no trial has finished an epoch yet"));
    }
    let (w, h) = (1100u32, 560u32);
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        sweep_on(&root, trials).map_err(|e| draw_err(png, e))?;
    }
    save_png(png, rgb, w, h)
}

fn sweep_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    trials: &[(String, Vec<EpochMetrics>)],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let last = trials.iter().flat_map(|(_, h)| h.last()).map(|m| m.epoch).max().unwrap_or(1).max(2) as f64;
    let values: Vec<f64> =
        trials.iter().flat_map(|(_, h)| h.iter().map(|m| m.val_acc)).filter(|&v| plottable(v)).collect();
    let lo = values.iter().copied().fold(1.0f64, f64::min).min(0.9);
    let mut chart = ChartBuilder::on(root)
        .caption("val_acc of every trial", (FONT, 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(1.0..last, (lo - 0.01)..1.0)
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc("epoch").label_style((FONT, 13)).draw().map_err(|e| e.to_string())?;
    for (i, (label, history)) in trials.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = history.iter().map(|m| (m.epoch as f64, m.val_acc)).filter(|&(_, v)| plottable(v));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// The confusion matrix (`counts[actual][predicted]`) as a heat map with the counts written in.
pub fn plot_confusion(counts: &[Vec<usize>], class_names: &[String], png: &Path) -> Result<()> {
    ensure_font();
    let classes = counts.len() as i32;
    // Ten classes get 56-pixel cells with their counts written in; many classes get smaller cells, bare.
    let cell = (560 / classes).clamp(4, 56);
    let (left, top) = (130i32, 60i32);
    let (w, h) = ((left + classes * cell + 20) as u32, (top + classes * cell + 40) as u32);
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let go = || -> Result<(), String> {
            root.fill(&WHITE).map_err(|e| e.to_string())?;
            let style = (FONT, 14).into_font();
            root.draw_text("predicted ->", &style.color(&BLACK), (left, 8)).map_err(|e| e.to_string())?;
            root.draw_text("actual", &style.color(&BLACK), (8, top - 24)).map_err(|e| e.to_string())?;
            for (actual, row) in counts.iter().enumerate() {
                let total = row.iter().sum::<usize>().max(1) as f64;
                let name: String = class_names[actual].chars().take(12).collect();
                if cell >= 16 {
                    root.draw_text(&name, &style.color(&BLACK), (8, top + actual as i32 * cell + cell / 2 - 7))
                        .map_err(|e| e.to_string())?;
                }
                for (pred, &c) in row.iter().enumerate() {
                    let share = c as f64 / total;
                    // White for none, deep blue for all of the row.
                    let shade = (255.0 * (1.0 - share.sqrt())) as u8;
                    let color = RGBColor(shade, shade, 255);
                    let (x, y) = (left + pred as i32 * cell, top + actual as i32 * cell);
                    root.draw(&Rectangle::new([(x, y), (x + cell - 1, y + cell - 1)], color.filled()))
                        .map_err(|e| e.to_string())?;
                    let ink = if share > 0.4 { &WHITE } else { &BLACK };
                    if cell >= 40 {
                        root.draw_text(&c.to_string(), &style.color(ink), (x + 6, y + cell / 2 - 7))
                            .map_err(|e| e.to_string())?;
                    }
                }
                if cell < 16 {
                    continue;
                }
                root.draw_text(
                    &format!("{pred}", pred = actual),
                    &style.color(&BLACK),
                    (left + actual as i32 * cell + cell / 2 - 4, top - 18),
                )
                .map_err(|e| e.to_string())?;
            }
            root.present().map_err(|e| e.to_string())
        };
        go().map_err(|e| draw_err(png, e))?;
    }
    save_png(png, rgb, w, h)
}

/// One small grey picture for a grid.
pub struct Tile<'a> {
    /// Row-major values; drawn from black (the tile's minimum) to white (its maximum) unless `range` is set.
    pub values: &'a [f32],
    pub width: usize,
    pub height: usize,
    pub label: String,
    /// Fixed value range, e.g. `(0, 1)` for input images.
    pub range: Option<(f32, f32)>,
}

/// Tiles in a grid, `columns` wide, each scaled up by `scale`, with its label above it.
pub fn plot_grid(tiles: &[Tile], columns: usize, scale: u32, title: &str, png: &Path) -> Result<()> {
    ensure_font();
    if tiles.is_empty() {
        return Err(Error::NothingToDraw("no tiles"));
    }
    let columns = columns.clamp(1, tiles.len());
    let rows = tiles.len().div_ceil(columns);
    let tw = tiles.iter().map(|t| t.width).max().unwrap_or(1) as u32 * scale;
    let th = tiles.iter().map(|t| t.height).max().unwrap_or(1) as u32 * scale;
    let (cw, ch) = ((tw + 16).max(90), th + 30);
    let (w, h) = (columns as u32 * cw + 16, rows as u32 * ch + 44);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    // Pixels first, straight into the buffer.
    for (k, t) in tiles.iter().enumerate() {
        let (x0, y0) = (8 + (k % columns) as u32 * cw, 40 + (k / columns) as u32 * ch + 22);
        let (lo, hi) =
            t.range.unwrap_or_else(|| t.values.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v))));
        let span = if hi > lo { hi - lo } else { 1.0 };
        for y in 0..t.height as u32 * scale {
            for x in 0..t.width as u32 * scale {
                let v = t.values[(y / scale) as usize * t.width + (x / scale) as usize];
                let g = (((v - lo) / span).clamp(0.0, 1.0) * 255.0) as u8;
                let i = (((y0 + y) * w + x0 + x) * 3) as usize;
                rgb[i..i + 3].copy_from_slice(&[g, g, g]);
            }
        }
    }
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let go = || -> Result<(), String> {
            let style = (FONT, 13).into_font().color(&BLACK);
            root.draw_text(title, &(FONT, 16).into_font().color(&BLACK), (8, 10)).map_err(|e| e.to_string())?;
            for (k, t) in tiles.iter().enumerate() {
                let (x0, y0) = (8 + (k % columns) as i32 * cw as i32, 40 + (k / columns) as i32 * ch as i32);
                root.draw_text(&t.label, &style, (x0, y0 + 4)).map_err(|e| e.to_string())?;
            }
            root.present().map_err(|e| e.to_string())
        };
        go().map_err(|e| draw_err(png, e))?;
    }
    save_png(png, rgb, w, h)
}
