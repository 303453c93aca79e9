//! Cross-entropy on scores (`nn.CrossEntropyLoss`): log-softmax then negative log-likelihood.
//!
//! `loss_n = logsumexp(s_n) - s_n[t_n]`; the batch loss is the mean over the batch, so the gradient is
//! `(softmax(s_n) - onehot(t_n)) / batch`.
//!
//! # Shapes
//! scores `(N, classes)`, targets `(N)`.
//!
//! `exp` and `ln` are the crate's own (see [`crate::math`]), so the loss has the same bits on every platform.

use crate::math::{exp, exp_in_place, ln};

/// One sample's loss, whether it was classified right (argmax, first index on ties), and, when `grad` is
/// given, `(softmax - onehot) * scale` written into it.
pub fn cross_entropy(scores: &[f32], target: usize, grad: Option<(&mut [f32], f32)>) -> (f32, bool) {
    let (max, argmax, log_sum) = log_softmax_parts(scores);
    let loss = -(scores[target] - max - log_sum);
    if let Some((grad, scale)) = grad {
        for (i, (g, s)) in grad.iter_mut().zip(scores).enumerate() {
            let p = exp(s - max - log_sum);
            *g = (p - if i == target { 1.0 } else { 0.0 }) * scale;
        }
    }
    (loss, argmax == target)
}

/// [`cross_entropy`] against a target smoothed as PyTorch's `CrossEntropyLoss(label_smoothing=smoothing)`:
/// `1 - smoothing` on the target plus `smoothing / classes` on every class, so the loss is
/// `(1 - smoothing) * nll(target) + smoothing * mean over classes of nll(class)` and the gradient
/// `(softmax - smoothed target) * scale`. A smoothing of 0 is [`cross_entropy`] itself, to the bit.
pub fn cross_entropy_smoothed(
    scores: &[f32],
    target: usize,
    smoothing: f32,
    grad: Option<(&mut [f32], f32)>,
) -> (f32, bool) {
    if smoothing == 0.0 {
        return cross_entropy(scores, target, grad);
    }
    let (max, argmax, log_sum) = log_softmax_parts(scores);
    let nll = |s: f32| -(s - max - log_sum);
    let classes = scores.len() as f32;
    let mean_nll = scores.iter().map(|&s| nll(s)).sum::<f32>() / classes;
    let loss = (1.0 - smoothing) * nll(scores[target]) + smoothing * mean_nll;
    if let Some((grad, scale)) = grad {
        let (on, off) = (1.0 - smoothing + smoothing / classes, smoothing / classes);
        for (i, (g, s)) in grad.iter_mut().zip(scores).enumerate() {
            let p = exp(s - max - log_sum);
            *g = (p - if i == target { on } else { off }) * scale;
        }
    }
    (loss, argmax == target)
}

/// The largest score, its index (the first on ties) and `ln(sum(exp(score - max)))`: what log-softmax needs.
fn log_softmax_parts(scores: &[f32]) -> (f32, usize, f32) {
    let mut max = f32::NEG_INFINITY;
    let mut argmax = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > max {
            max = s;
            argmax = i;
        }
    }
    // The exponentials 16 at a time, summed in order.
    let mut sum_exp = 0.0;
    let mut chunk = [0f32; 16];
    for part in scores.chunks(16) {
        let chunk = &mut chunk[..part.len()];
        for (e, s) in chunk.iter_mut().zip(part) {
            *e = s - max;
        }
        exp_in_place(chunk);
        sum_exp = chunk.iter().fold(sum_exp, |sum, e| sum + e);
    }
    (max, argmax, ln(sum_exp))
}

/// The index of the largest score (the first one on ties, like `torch.argmax`).
pub fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

/// Probabilities that sum to one: softmax of the scores.
pub fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores.iter().map(|s| exp(s - max)).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}
