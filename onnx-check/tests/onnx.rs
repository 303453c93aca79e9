//! The ONNX models `lenet5 export --onnx` writes, run in tract (an independent runtime), give our outputs for
//! both heads, with a dynamic batch axis.

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
