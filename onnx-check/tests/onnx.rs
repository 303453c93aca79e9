//! The ONNX models `lenet5 export --onnx` writes, run in tract (an independent runtime), give our outputs for
//! both heads, with a dynamic batch axis; and an int8 network's QDQ model gives the int8 engine's predictions.

use std::path::PathBuf;

use lenet5::interop::onnx;
use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::infer::Predictor;
use lenet5_core::nn::model::Head;
use safetensors::SafeTensors;

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The reference batch of images that PyTorch's fixtures were made from.
fn batch() -> Vec<[f32; 784]> {
    let bytes = std::fs::read(repo().join("tests/fixtures/reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let x: Vec<f32> =
        st.tensor("x").unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    x.chunks_exact(784).map(|c| c.try_into().unwrap()).collect()
}

/// Runs an ONNX model with tract on a batch of images; returns the flat outputs.
fn run_tract(model: &[u8], images: &[[f32; 784]]) -> Vec<f32> {
    use tract_onnx::prelude::*;
    let n = images.len();
    let plan = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(model))
        .unwrap()
        .with_input_fact(0, f32::fact([n, 1, 28, 28]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let flat: Vec<f32> = images.iter().flatten().copied().collect();
    let input = tract_ndarray::Array4::from_shape_vec((n, 1, 28, 28), flat).unwrap();
    let out = plan.run(tvec!(Tensor::from(input).into())).unwrap();
    out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
}

#[test]
fn exported_onnx_runs_in_an_independent_runtime_and_matches_for_both_heads() {
    let images = batch();
    for head in [Head::Sigmoid, Head::Logits] {
        let mut ck = Checkpoint::load(&repo().join("models/lenet5-mnist.safetensors")).unwrap();
        ck.head = head;
        let model = onnx::export(&ck);
        let ours: Vec<f32> = Predictor::new(ck).predict(&images).iter().flat_map(|p| p.scores.clone()).collect();
        let theirs = run_tract(&model, &images);
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{head:?}: ours {a}, tract {b}");
        }
        // the batch axis is dynamic: one image works as well
        assert_eq!(run_tract(&model, &images[..1]).len(), 10);
    }
}

/// A network of another number of classes (3 and 26) exports with an output `[N, K]` that tract runs to our
/// scores.
#[test]
fn exported_onnx_of_other_class_counts_matches_in_an_independent_runtime() {
    let images = batch();
    for (classes, head) in [(3, Head::Logits), (26, Head::Sigmoid)] {
        let mut ck = Checkpoint::new(lenet5_core::nn::params::init_params_for(7, classes), head);
        ck.class_names = (0..classes).map(|k| format!("class {k}")).collect();
        let model = onnx::export(&ck);
        let ours: Vec<f32> = Predictor::new(ck).predict(&images).iter().flat_map(|p| p.scores.clone()).collect();
        let theirs = run_tract(&model, &images);
        assert_eq!((ours.len(), theirs.len()), (images.len() * classes, images.len() * classes));
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{classes} classes: ours {a}, tract {b}");
        }
    }
}

/// One split of the bundled MNIST (`train` or `t10k`).
fn mnist(prefix: &str) -> lenet5_core::data::Split {
    let path = |kind: &str, n: u8| repo().join(format!("data/MNIST/raw/{prefix}-{kind}-idx{n}-ubyte.gz"));
    lenet5_core::data::Split::load(&path("images", 3), &path("labels", 1)).unwrap()
}

/// The shipped model quantized (calibrated on 1000 training images), exported as QDQ, and run by tract on all
/// 10,000 test images: its predictions are the int8 engine's but for the rare image where a runtime computing
/// in float (and rounding halves to even) and the engine (TFLite's fixed point) round an activation near a
/// tie apart; and its scores are the engine's but for those images.
#[test]
fn an_int8_network_exports_as_qdq_that_tract_runs_to_the_engines_predictions() {
    use lenet5_core::quant::QuantModel;
    let test = mnist("t10k");
    for head in [Head::Sigmoid, Head::Logits] {
        let mut ck = Checkpoint::load(&repo().join("models/lenet5-mnist.safetensors")).unwrap();
        ck.head = head;
        let q = QuantModel::quantize(&ck, &mnist("train"), 1000, 0).unwrap();
        let model = onnx::export_int8(&q);
        let images: Vec<[f32; 784]> =
            (0..test.len()).map(|i| std::array::from_fn(|p| test.image(i)[p] as f32 / 255.0)).collect();
        let mut theirs = Vec::new();
        for chunk in images.chunks(1000) {
            theirs.extend(run_tract(&model, chunk));
        }
        let (mut same, mut worst, mut diffs) = (0, 0f32, Vec::new());
        let (mut engine_correct, mut tract_correct) = (0, 0);
        for (i, image) in images.iter().enumerate() {
            let ours = q.predict_image(image);
            let outputs = &theirs[i * 10..(i + 1) * 10];
            let predicted = (0..10).fold(0, |best, k| if outputs[k] > outputs[best] { k } else { best });
            same += usize::from(predicted == ours.class);
            engine_correct += usize::from(ours.class == test.labels[i] as usize);
            tract_correct += usize::from(predicted == test.labels[i] as usize);
            for (a, b) in ours.scores.iter().zip(outputs) {
                worst = worst.max((a - b).abs());
                diffs.push((a - b).abs());
            }
        }
        diffs.sort_by(f32::total_cmp);
        let (median, p99) = (diffs[diffs.len() / 2], diffs[diffs.len() * 99 / 100]);
        println!(
            "{head:?}: {same} of 10000 predictions agree; correct: engine {engine_correct}, tract {tract_correct}; \
             score differences: median {median}, 99th percentile {p99}, largest {worst}"
        );
        assert!(same >= 9_990, "{head:?}: {same} of 10000 agree");
        assert!(engine_correct.abs_diff(tract_correct) <= 5, "{engine_correct} vs {tract_correct}");
        // Probabilities for the sigmoid head; logits (of magnitude 10 to 30 here) for the other.
        let (median_at_most, p99_at_most) = match head {
            Head::Sigmoid => (1e-5, 1e-3),
            Head::Logits => (0.01, 0.5),
        };
        assert!(median <= median_at_most && p99 <= p99_at_most, "{head:?}: median {median}, p99 {p99}");
        assert_eq!(run_tract(&model, &images[..1]).len(), 10);
    }
}

/// An int8 network of 3 classes (random weights, the logits head) and one of 26 (the sigmoid head) export as QDQ
/// with an output `[N, K]`, and tract predicts what the engine predicts.
#[test]
fn int8_networks_of_other_class_counts_export_as_qdq_with_their_k_outputs() {
    use lenet5_core::quant::QuantModel;
    let test = mnist("t10k");
    let images: Vec<[f32; 784]> = (0..500).map(|i| std::array::from_fn(|p| test.image(i)[p] as f32 / 255.0)).collect();
    for (classes, head) in [(3, Head::Logits), (26, Head::Sigmoid)] {
        let mut ck = Checkpoint::new(lenet5_core::nn::params::init_params_for(7, classes), head);
        ck.class_names = (0..classes).map(|k| format!("class {k}")).collect();
        let q = QuantModel::quantize(&ck, &mnist("train"), 200, 0).unwrap();
        let theirs = run_tract(&onnx::export_int8(&q), &images);
        assert_eq!(theirs.len(), images.len() * classes);
        let same = images
            .iter()
            .zip(theirs.chunks_exact(classes))
            .filter(|(image, outputs)| {
                let predicted = (0..classes).fold(0, |best, k| if outputs[k] > outputs[best] { k } else { best });
                predicted == q.predict_image(&image[..]).class
            })
            .count();
        assert!(same >= 495, "{classes} classes: {same} of 500 agree");
    }
}
