//! Using trained weights: predictions with probabilities, and the activations behind them.

use crate::base::Image as Digit;
use crate::checkpoint::Checkpoint;
use crate::nn::model::{Head, IMAGE_LEN, Stage, Workspace, forward};

/// One image's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The head's outputs, as the loss saw them, one per class.
    pub scores: Vec<f32>,
    /// Sums to one: softmax of the logits for the logits head; the sigmoid outputs normalised for the
    /// sigmoid head (a softmax of ten values in [0, 1] would never exceed e/(e+9) = 0.23).
    pub probabilities: Vec<f32>,
    /// Argmax of the scores.
    pub class: usize,
}

impl Prediction {
    pub(crate) fn from_scores(head: Head, scores: &[f32]) -> Self {
        let probabilities = match head {
            Head::Logits => crate::nn::loss::softmax(scores),
            Head::Sigmoid => {
                let sum: f32 = scores.iter().sum();
                scores.iter().map(|&s| if sum > 0.0 { s / sum } else { 1.0 / scores.len() as f32 }).collect()
            }
        };
        Prediction { scores: scores.to_vec(), probabilities, class: crate::nn::loss::argmax(scores) }
    }

    /// The `k` most probable classes, most probable first.
    pub fn top_k(&self, k: usize) -> Vec<(usize, f32)> {
        let mut v: Vec<(usize, f32)> = self.probabilities.iter().copied().enumerate().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(k);
        v
    }
}

/// What each layer made of one image, NCHW per image: `conv1 (6, 28, 28)`, `pool1 (6, 14, 14)`,
/// `conv2 (16, 10, 10)`, `pool2 (16, 5, 5)`.
#[derive(Clone, Debug)]
pub struct Activations {
    pub conv1: Vec<f32>,
    pub pool1: Vec<f32>,
    pub conv2: Vec<f32>,
    pub pool2: Vec<f32>,
}

/// Trained weights ready to run.
pub struct Predictor {
    pub checkpoint: Checkpoint,
    ws: Workspace,
}

const CHUNK: usize = 64;

impl Predictor {
    pub fn new(checkpoint: Checkpoint) -> Self {
        let classes = checkpoint.classes();
        Predictor { checkpoint, ws: Workspace::new(CHUNK, classes) }
    }

    pub fn class_name(&self, class: usize) -> &str {
        &self.checkpoint.class_names[class]
    }

    /// Predicts every image.
    pub fn predict(&mut self, images: &[Digit]) -> Vec<Prediction> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(CHUNK) {
            for (dst, img) in self.ws.input.chunks_exact_mut(IMAGE_LEN).zip(chunk) {
                dst.copy_from_slice(img);
            }
            let (head, classes) = (self.checkpoint.head, self.ws.classes());
            for scores in self.forward_chunk(chunk.len()).chunks_exact(classes) {
                out.push(Prediction::from_scores(head, scores));
            }
        }
        out
    }

    /// The head's outputs for images given as N x 784 pixels (N = `pixels.len() / 784`; a partial image at the
    /// end is left out): N x K values, image by image.
    pub fn scores(&mut self, pixels: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(pixels.len() / IMAGE_LEN * self.ws.classes());
        for chunk in pixels.chunks(CHUNK * IMAGE_LEN) {
            let n = chunk.len() / IMAGE_LEN;
            self.ws.input[..n * IMAGE_LEN].copy_from_slice(&chunk[..n * IMAGE_LEN]);
            out.extend_from_slice(self.forward_chunk(n));
        }
        out
    }

    /// Runs the network on the first `n` images of the workspace's input; their scores.
    fn forward_chunk(&mut self, n: usize) -> &[f32] {
        forward(&self.checkpoint.params, self.checkpoint.head, &mut self.ws, n, &mut ());
        &self.ws.scores[..n * self.ws.classes()]
    }

    /// Predicts one image and returns what every convolution and pooling layer produced.
    pub fn predict_with_activations(&mut self, image: &Digit) -> (Prediction, Activations) {
        let prediction = self.predict(std::slice::from_ref(image)).remove(0);
        let maps = |stage: Stage| self.ws.feature_maps(stage, 1, 0).expect("a conv or pool stage");
        let acts = Activations {
            conv1: maps(Stage::Conv1),
            pool1: maps(Stage::Pool1),
            conv2: maps(Stage::Conv2),
            pool2: maps(Stage::Pool2),
        };
        (prediction, acts)
    }
}
