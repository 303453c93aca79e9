//! Post-training int8 quantization, with TFLite's int8 scheme as CMSIS-NN's `_s8` kernels compute it, and the
//! integer engine that runs the result.
//!
//! - Weights: int8, symmetric, one scale per output channel (`max |w| / 127`).
//! - Activations: int8 with zero point -128 and a scale per layer, `max / 255` of the layer's ReLU output over
//!   calibration images run through the float network (the input: pixels / 255, exactly).
//! - Biases and accumulators: int32, the bias at the scale of input times weight.
//! - Requantization: in fixed point (the `fixed` module), so any integer machine computes the same numbers.
//! - Scores: the output layer's accumulators requantized to one scale for all classes (`max |logit| / 32767`
//!   over the calibration images), as int32: only they are turned back into reals, for the loss.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod c;
mod engine;
mod file;
mod fixed;
#[cfg(target_arch = "x86_64")]
mod vnni;

/// LeNet-5's sides and channels, as the int8 kernels name them.
#[cfg(target_arch = "x86_64")]
mod shape {
    /// The side of the image, the kernel's, and the rows of conv1's image padded by 2.
    pub(super) const S1: usize = 28;
    pub(super) const K: usize = 5;
    pub(super) const PH1: usize = S1 + 4;
    /// conv2's input side, its output side, and its input and output channels.
    pub(super) const S2: usize = 14;
    pub(super) const C2: usize = 10;
    pub(super) const IN2: usize = 6;
    pub(super) const OUT2: usize = 16;
}

use crate::base::{IMAGE_LEN, Label};
use crate::checkpoint::Checkpoint;
use crate::data::Split;
use crate::error::{Error, Result};
use crate::infer::Prediction;
use crate::nn::activation::sigmoid_forward;
use crate::nn::loss::cross_entropy;
use crate::nn::model::{Head, Workspace, forward};
use crate::nn::params::Tensors;
use crate::rng::Rng;
use crate::train::{EvalResult, figures};
use engine::{QLayer, QLayers};
use fixed::Requant;

/// An int8 network: its layers, the scales it was quantized with, and what the float weights' checkpoint said
/// about them (head, class names, metadata).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantModel {
    pub(crate) layers: QLayers,
    /// The scales of the activations after conv1, conv2, linear1 and linear2 (and their pools): all with zero
    /// point -128.
    pub activation_scales: [f32; 4],
    /// Each layer's weight scales, one per output channel, in layer order.
    pub weight_scales: [Vec<f32>; 5],
    /// The scale of the scores: a score `s` is the logit `s * scores_scale`.
    pub scores_scale: f32,
    pub head: Head,
    pub class_names: Vec<String>,
    /// The float checkpoint's metadata (data set, settings, preprocessing), and the calibration's.
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// The scale of the input: pixels / 255, with zero point -128, so that the int8 input is `pixel - 128`.
pub(crate) const INPUT_SCALE: f32 = 1.0 / 255.0;
/// The zero point of every activation (each follows a ReLU).
pub(crate) const ACTIVATION_ZERO_POINT: i32 = -128;
/// The largest score of the calibration images, in units of the scores' scale.
const SCORES_RANGE: f64 = 32767.0;
/// Most calibration images: far more than any use needs.
const MAX_CALIBRATION: usize = 100_000;
/// The layers' names, as the files and the C export call them.
const LAYER_NAMES: [&str; 5] = ["conv1", "conv2", "linear1", "linear2", "output"];

impl QuantModel {
    /// Quantizes the weights of `ck`, calibrating the activations on `count` images of `calibration` drawn by
    /// `seed`. Refused: a count of 0 or above 100,000, and weights that are not all finite.
    pub fn quantize(ck: &Checkpoint, calibration: &Split, count: usize, seed: u64) -> Result<QuantModel> {
        let bad = |value: String, expected| Error::Setting { setting: "calibration", value, expected };
        if count == 0 || count > MAX_CALIBRATION {
            return Err(bad(count.to_string(), "from 1 to 100000 images"));
        }
        if calibration.is_empty() {
            return Err(bad("0 images in the data".into(), "a data set with training images"));
        }
        if let Some(i) = ck.params.iter().position(|v| !v.is_finite()) {
            return Err(Error::Shape {
                expected: "finite weights".into(),
                found: format!("value {i} is {}", ck.params[i]),
            });
        }
        let ranges = calibrate(ck, calibration, count, seed);
        let p = Tensors::of(&ck.params);
        let [a1, a2, a3, a4] = ranges.activations.map(|max| if max > 0.0 { max / 255.0 } else { INPUT_SCALE as f64 });
        let scores_scale = if ranges.logits > 0.0 { ranges.logits / SCORES_RANGE } else { 1.0 / SCORES_RANGE };
        let layer =
            |w: &[f32], b: &[f32], input_scale: f64, output_scale: f64| quantize_layer(w, b, input_scale, output_scale);
        let (conv1, s1) = layer(p.conv1_weight, p.conv1_bias, INPUT_SCALE as f64, a1)?;
        let (conv2, s2) = layer(p.conv2_weight, p.conv2_bias, a1, a2)?;
        let (linear1, s3) = layer(p.linear1_weight, p.linear1_bias, a2, a3)?;
        let (linear2, s4) = layer(p.linear2_weight, p.linear2_bias, a3, a4)?;
        let (output, s5) = layer(p.output_weight, p.output_bias, a4, scores_scale)?;
        let mut metadata: std::collections::BTreeMap<String, String> =
            ck.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        metadata.insert("calibration".into(), format!("{} images, seed {seed}", count.min(calibration.len())));
        Ok(QuantModel {
            layers: QLayers::new([conv1, conv2, linear1, linear2, output]),
            activation_scales: [a1, a2, a3, a4].map(|s| s as f32),
            weight_scales: [s1, s2, s3, s4, s5],
            scores_scale: scores_scale as f32,
            head: ck.head,
            class_names: ck.class_names.clone(),
            metadata,
        })
    }

    /// The instructions the integer engine runs on this CPU: `avx2 (vpmaddwd)`, `avx-vnni (vpdpwssd)`,
    /// `avx-512 vnni (vpdpbusd)`, or the plain engine compiled for the float kernels' instruction set.
    pub fn instruction_set() -> &'static str {
        engine::instruction_set()
    }

    /// Calibration images when none are asked for.
    pub const DEFAULT_CALIBRATION: usize = 1000;

    /// Classes the network tells apart.
    pub fn classes(&self) -> usize {
        self.layers.output.outputs()
    }

    /// Bytes of the `const` arrays of the C export: weights, biases, multipliers and shifts.
    pub fn const_bytes(&self) -> usize {
        self.layers.all().iter().map(|l| l.weight.len() + 9 * l.outputs()).sum()
    }

    /// Each layer's name (`conv1` ... `output`), int8 weights (`(outputs, inputs)`, a filter in `(C, kh, kw)`
    /// order) and int32 biases (at the scale of the layer's input times its weight scale), in order.
    pub fn layers(&self) -> [(&'static str, &[i8], &[i32]); 5] {
        let layers = self.layers.all();
        std::array::from_fn(|i| (LAYER_NAMES[i], &layers[i].weight[..], &layers[i].bias[..]))
    }

    /// The scale of the input: a pixel `p` (0..=255) is the real `p / 255`, held as the int8 `p - 128`.
    pub const INPUT_SCALE: f32 = INPUT_SCALE;

    /// The C export: the header's name and text, and the source's (see `c`).
    pub fn to_c(&self) -> [(&'static str, String); 2] {
        [(c::HEADER, c::header(self)), ("lenet5_model.c", c::source(self))]
    }

    /// The predicted class of one image (784 pixels, 0..=255, as MNIST's files hold them) and its scores.
    pub fn predict(&self, pixels: &[u8], scores: &mut [i32]) -> usize {
        assert_eq!((pixels.len(), scores.len()), (IMAGE_LEN, self.classes()));
        self.layers.predict(pixels, scores)
    }

    /// The prediction for one image as the float engine takes it (784 values in [0, 1], e.g. a prepared
    /// picture): its pixels rounded to bytes (the int8 input), the head's outputs on the logits the scores stand
    /// for, and the class of the highest score.
    pub fn predict_image(&self, image: &[f32]) -> Prediction {
        let pixels: Vec<u8> = image.iter().map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8).collect();
        let mut scores = vec![0i32; self.classes()];
        let class = self.predict(&pixels, &mut scores);
        let logits: Vec<f32> = scores.iter().map(|&s| s as f32 * self.scores_scale).collect();
        let mut reals = vec![0f32; logits.len()];
        match self.head {
            Head::Sigmoid => sigmoid_forward(&logits, &mut reals),
            Head::Logits => reals.copy_from_slice(&logits),
        }
        Prediction { class, ..Prediction::from_scores(self.head, &reals) }
    }

    /// Loss and accuracy over `split`, as [`crate::train::Evaluator`] reports them for float weights: the loss is
    /// cross-entropy of the head's output on the logits the scores stand for. Also returns the predictions. The
    /// images are shared among `threads` threads, which changes no number.
    pub fn evaluate(&self, split: &Split, batch_size: usize, threads: usize) -> (EvalResult, Vec<Label>) {
        let n = split.len();
        let (mut losses, mut predictions) = (vec![0f32; n], vec![0 as Label; n]);
        let workers = if cfg!(feature = "threads") { threads.clamp(1, n.max(1)) } else { 1 };
        let per_worker = n.div_ceil(workers).max(1);
        if workers == 1 {
            self.score_images(split, 0, &mut losses, &mut predictions);
        } else {
            let parts = losses.chunks_mut(per_worker).zip(predictions.chunks_mut(per_worker)).enumerate();
            std::thread::scope(|scope| {
                for (w, (losses, predictions)) in parts {
                    scope.spawn(move || self.score_images(split, w * per_worker, losses, predictions));
                }
            });
        }
        (figures(&losses, &predictions, &split.labels, batch_size), predictions)
    }

    /// The losses and predictions of the images of `split` from `first` on, one per slot.
    fn score_images(&self, split: &Split, first: usize, losses: &mut [f32], predictions: &mut [Label]) {
        // Images a call of the engine: what its batched kernels take at once.
        const CHUNK: usize = 64;
        let k = self.classes();
        let (mut scores, mut classes) = (vec![0i32; CHUNK * k], [0usize; CHUNK]);
        let (mut logits, mut reals) = (vec![0f32; k], vec![0f32; k]);
        let slots = losses.chunks_mut(CHUNK).zip(predictions.chunks_mut(CHUNK));
        for (chunk, (losses, predictions)) in slots.enumerate() {
            let (start, n) = (first + chunk * CHUNK, losses.len());
            let pixels = &split.images[start * IMAGE_LEN..(start + n) * IMAGE_LEN];
            self.layers.predict_batch(pixels, &mut scores[..n * k], &mut classes[..n]);
            for (i, (loss, prediction)) in losses.iter_mut().zip(predictions.iter_mut()).enumerate() {
                for (logit, &s) in logits.iter_mut().zip(&scores[i * k..(i + 1) * k]) {
                    *logit = s as f32 * self.scores_scale;
                }
                match self.head {
                    Head::Sigmoid => sigmoid_forward(&logits, &mut reals),
                    Head::Logits => reals.copy_from_slice(&logits),
                }
                *loss = cross_entropy(&reals, split.labels[start + i] as usize, None).0;
                *prediction = classes[i] as Label;
            }
        }
    }
}

/// Quantizes one layer: weights `(O, I)` per output channel, biases at `input_scale * weight scale`, and the
/// requantization of each output to `output_scale`. Returns the layer and its weight scales.
fn quantize_layer(w: &[f32], b: &[f32], input_scale: f64, output_scale: f64) -> Result<(QLayer, Vec<f32>)> {
    let inputs = w.len() / b.len();
    let (mut weight, mut bias, mut requant, mut scales) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (row, &b) in w.chunks_exact(inputs).zip(b) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        weight.extend(row.iter().map(|&v| (v as f64 / scale).round().clamp(-127.0, 127.0) as i8));
        // `as` saturates: a bias beyond the int32 range (weights all but zero) stays at its bound.
        bias.push((b as f64 / (input_scale * scale)).round() as i32);
        let real = input_scale * scale / output_scale;
        requant.push(Requant::of(real).ok_or_else(|| Error::Shape {
            expected: "a requantization multiplier below 2^30".into(),
            found: format!("{real:e} (activations all but zero)"),
        })?);
        scales.push(scale as f32);
    }
    Ok((QLayer { weight, bias, requant }, scales))
}

/// The largest values of the float network's ReLU outputs (conv1, conv2, linear1, linear2) and of its logits'
/// magnitudes over some images.
struct Ranges {
    activations: [f64; 4],
    logits: f64,
}

/// Runs `count` images of `split` (drawn by `seed`; all of them if it has fewer) through the float network.
fn calibrate(ck: &Checkpoint, split: &Split, count: usize, seed: u64) -> Ranges {
    let mut order: Vec<u32> = (0..split.len() as u32).collect();
    Rng::derived(seed, 7, 0).shuffle(&mut order);
    order.truncate(count);
    const CHUNK: usize = 64;
    let classes = ck.classes();
    let mut ws = Workspace::new(CHUNK, classes);
    let mut labels = [0 as Label; CHUNK];
    let mut r = Ranges { activations: [0.0; 4], logits: 0.0 };
    let max = |v: &[f32]| v.iter().fold(0f64, |m, &x| m.max(x.abs() as f64));
    for chunk in order.chunks(CHUNK) {
        let n = chunk.len();
        split.gather(chunk, &mut ws.input, &mut labels[..n]);
        forward(&ck.params, Head::Logits, &mut ws, n, &mut ());
        let found = [
            max(&ws.conv1[..n * 6 * 784]),
            max(&ws.conv2[..n * 1600]),
            max(&ws.linear1[..n * 120]),
            max(&ws.linear2[..n * 84]),
        ];
        for (a, f) in r.activations.iter_mut().zip(found) {
            *a = a.max(f);
        }
        r.logits = r.logits.max(max(&ws.logits[..n * classes]));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::init_params_for;

    /// `n` images of bands: class k is bright across rows 2k..2k+4.
    fn bands(n: usize) -> Split {
        let labels: Vec<Label> = (0..n).map(|i| (i * 7 % 10) as Label).collect();
        let mut images = vec![0u8; n * IMAGE_LEN];
        for (i, &k) in labels.iter().enumerate() {
            images[i * IMAGE_LEN + 2 * k as usize * 28..][..4 * 28].fill(200 + (i % 50) as u8);
        }
        Split { images, labels }
    }

    fn model(head: Head) -> (Checkpoint, QuantModel) {
        let mut ck = Checkpoint::new(init_params_for(3, 10), head);
        ck.metadata.insert("dataset".into(), "bands".into());
        let q = QuantModel::quantize(&ck, &bands(100), 40, 1).unwrap();
        (ck, q)
    }

    #[test]
    #[cfg_attr(target_family = "wasm", ignore = "WASI has no temporary directory")]
    fn an_int8_file_reads_back_as_written_and_any_thread_count_gives_the_same_figures() {
        for head in [Head::Sigmoid, Head::Logits] {
            let (_, q) = model(head);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("q.safetensors");
            q.save(&path).unwrap();
            assert!(QuantModel::is_int8_file(&path).unwrap());
            let back = QuantModel::load(&path).unwrap();
            assert_eq!((&back.layers, back.head, &back.class_names), (&q.layers, head, &q.class_names));
            assert_eq!(back.metadata.get("dataset").map(String::as_str), Some("bands"));
            let test = bands(37);
            let one = q.evaluate(&test, 16, 1);
            assert_eq!(one, back.evaluate(&test, 16, 3));
            assert_eq!(one.0.total, 37);
        }
    }

    #[test]
    fn the_network_compiled_for_this_cpu_gives_the_integers_of_the_baseline_build() {
        let (_, q) = model(Head::Logits);
        let test = bands(30);
        let (mut fast, mut plain) = ([0i32; 10], [0i32; 10]);
        for i in 0..30 {
            let class = q.predict(test.image(i), &mut fast);
            assert_eq!(class, q.layers.predict_portable(test.image(i), &mut plain));
            assert_eq!(fast, plain);
        }
    }

    #[test]
    fn the_scores_follow_the_float_logits() {
        // The int8 network's scores, turned back into reals, stay near the float network's logits.
        let (ck, q) = model(Head::Logits);
        let test = bands(20);
        let mut ws = Workspace::new(20, 10);
        let mut labels = [0 as Label; 20];
        split_gather(&test, &mut ws, &mut labels);
        forward(&ck.params, Head::Logits, &mut ws, 20, &mut ());
        let range = ws.logits[..200].iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut scores = [0i32; 10];
        for i in 0..20 {
            q.predict(test.image(i), &mut scores);
            for (s, l) in scores.iter().zip(&ws.logits[i * 10..(i + 1) * 10]) {
                assert!((*s as f32 * q.scores_scale - l).abs() <= 0.05 * range, "{s} vs {l}");
            }
        }
    }

    fn split_gather(split: &Split, ws: &mut Workspace, labels: &mut [Label]) {
        let all: Vec<u32> = (0..split.len() as u32).collect();
        split.gather(&all, &mut ws.input, labels);
    }

    #[test]
    fn no_calibration_images_and_weights_that_are_not_finite_are_refused() {
        let (mut ck, _) = model(Head::Sigmoid);
        assert!(matches!(
            QuantModel::quantize(&ck, &bands(10), 0, 0),
            Err(Error::Setting { setting: "calibration", .. })
        ));
        ck.params[3] = f32::INFINITY;
        assert!(QuantModel::quantize(&ck, &bands(10), 5, 0).unwrap_err().to_string().contains("finite"));
    }

    #[test]
    #[cfg_attr(target_family = "wasm", ignore = "WASI has no temporary directory")]
    fn a_file_with_a_shift_out_of_range_or_a_float_checkpoint_is_refused_naming_it() {
        let (ck, mut q) = model(Head::Sigmoid);
        let dir = tempfile::tempdir().unwrap();
        q.layers.linear2.requant[5].shift = 40;
        let path = dir.path().join("bad.safetensors");
        q.save(&path).unwrap();
        let error = QuantModel::load(&path).unwrap_err().to_string();
        assert!(error.contains("bad.safetensors") && error.contains("linear2.multiplier"), "{error}");
        let float = dir.path().join("float.safetensors");
        ck.save(&float).unwrap();
        assert!(!QuantModel::is_int8_file(&float).unwrap());
        assert!(QuantModel::load(&float).unwrap_err().to_string().contains("not an int8 network"));
    }
}
