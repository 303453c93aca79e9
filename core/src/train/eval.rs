//! Forward-only passes over a whole split: the recipe's validation loss and accuracy.

use crate::base::{Label, MNIST_CLASS_COUNT};
use crate::data::Split;
use crate::error::Result;
use crate::nn::loss::{argmax, cross_entropy};
use crate::nn::model::{Head, Workspace, forward};
use crate::nn::params::classes_of;
use crate::parallel::{PhaseShared, Team};

/// Images per forward call.
const EVAL_CHUNK: usize = 64;

/// Loss and accuracy over a split, as every front end reports them: the loss is the mean of the per-batch mean
/// losses (batches of the run's size, as the recipe's `DataLoader` gives them), the accuracy `correct / total`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalResult {
    pub loss: f64,
    pub accuracy: f64,
    pub correct: usize,
    pub total: usize,
}

/// Forward-only passes over a whole split, on a team of workers, with buffers kept between calls.
pub struct Evaluator {
    team: Team,
    workspaces: Vec<Workspace>,
    /// Per image, after [`Evaluator::evaluate`]: the loss.
    pub losses: Vec<f32>,
    /// Per image, after [`Evaluator::evaluate`]: the predicted class.
    pub predictions: Vec<Label>,
    indices: Vec<u32>,
}

impl Evaluator {
    /// An evaluator that runs on `threads` workers (the count never changes a number).
    pub fn new(threads: usize) -> Result<Self> {
        let team = super::start_team(threads)?;
        Ok(Evaluator {
            workspaces: (0..team.workers()).map(|_| Workspace::new(EVAL_CHUNK, MNIST_CLASS_COUNT)).collect(),
            team,
            losses: Vec::new(),
            predictions: Vec::new(),
            indices: Vec::new(),
        })
    }

    /// Runs every image of `split`; per-batch means use `batch_size` like a `DataLoader` without `drop_last`.
    pub fn evaluate(&mut self, params: &[f32], head: Head, split: &Split, batch_size: usize) -> EvalResult {
        let n = split.len();
        let classes = classes_of(params.len());
        if self.workspaces[0].classes() != classes {
            self.workspaces.iter_mut().for_each(|ws| *ws = Workspace::new(EVAL_CHUNK, classes));
        }
        self.losses.resize(n, 0.0);
        self.predictions.resize(n, 0);
        if self.indices.len() != n {
            self.indices = (0..n as u32).collect();
        }
        // Worker w takes images w * per_worker.., in chunks of `EVAL_CHUNK`.
        let per_worker = n.div_ceil(self.workspaces.len()).max(1);
        let indices = &self.indices;
        let workspaces = PhaseShared::new(&mut self.workspaces);
        let all_losses = PhaseShared::new(&mut self.losses);
        let all_predictions = PhaseShared::new(&mut self.predictions);
        self.team.run(&|w| {
            let images = (w * per_worker).min(n)..((w + 1) * per_worker).min(n);
            // SAFETY: worker w alone uses workspace w and these images' results.
            let (ws, losses, predictions) = unsafe {
                let ws = &mut workspaces.get_mut(w..w + 1)[0];
                (ws, all_losses.get_mut(images.clone()), all_predictions.get_mut(images.clone()))
            };
            let mut labels = [0 as Label; EVAL_CHUNK];
            let chunks = losses.chunks_mut(EVAL_CHUNK).zip(predictions.chunks_mut(EVAL_CHUNK));
            for ((losses, predictions), idx) in chunks.zip(indices[images].chunks(EVAL_CHUNK)) {
                let m = idx.len();
                split.gather(idx, &mut ws.input, &mut labels[..m]);
                forward(params, head, ws, m, &mut ());
                for k in 0..m {
                    let scores = &ws.scores[k * classes..(k + 1) * classes];
                    losses[k] = cross_entropy(scores, labels[k] as usize, None).0;
                    predictions[k] = argmax(scores) as Label;
                }
            }
        });
        figures(&self.losses, &self.predictions, &split.labels, batch_size)
    }
}

/// The figures of a split from its per-image losses and predictions (see [`EvalResult`]): every evaluation, of
/// float or int8 weights, reports these.
pub(crate) fn figures(losses: &[f32], predictions: &[Label], labels: &[Label], batch_size: usize) -> EvalResult {
    let mut loss_sum = 0.0f64;
    let mut correct = 0;
    let mut batches = 0;
    for (losses, (preds, labels)) in
        losses.chunks(batch_size).zip(predictions.chunks(batch_size).zip(labels.chunks(batch_size)))
    {
        let ok = preds.iter().zip(labels).filter(|(p, l)| p == l).count();
        loss_sum += losses.iter().map(|&l| l as f64).sum::<f64>() / losses.len() as f64;
        correct += ok;
        batches += 1;
    }
    let batches = batches.max(1) as f64;
    let accuracy = correct as f64 / labels.len().max(1) as f64;
    EvalResult { loss: loss_sum / batches, accuracy, correct, total: labels.len() }
}
