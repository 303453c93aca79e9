//! The parameter block: LeNet-5's ten tensors, named and shaped as PyTorch's `state_dict`, one after the other
//! in a single flat `f32` block (llm.c's layout). Gradients and momentum use the same layout, so the optimiser
//! is one loop over one slice, and a tensor is found by its name, never by its position.

use std::ops::Range;

use crate::base::{MAX_CLASSES, MIN_CLASSES};
use crate::rng::Rng;

/// Every parameter tensor, in `state_dict` order, which is also their order in the flat block.
///
/// Only the output layer depends on the number of classes (one row per class); it comes last, so every other
/// tensor lies at the same place whatever that number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Param {
    Conv1Weight,
    Conv1Bias,
    Conv2Weight,
    Conv2Bias,
    Linear1Weight,
    Linear1Bias,
    Linear2Weight,
    Linear2Bias,
    OutputWeight,
    OutputBias,
}

/// Stands for the number of classes in [`SHAPES`].
const CLASSES: usize = 0;

/// Each [`Param`]'s `state_dict` name and shape, in the same order ([`CLASSES`] for the number of classes).
const SHAPES: [(&str, &[usize]); 10] = [
    ("conv1.weight", &[6, 1, 5, 5]),
    ("conv1.bias", &[6]),
    ("conv2.weight", &[16, 6, 5, 5]),
    ("conv2.bias", &[16]),
    ("linear1.weight", &[120, 400]),
    ("linear1.bias", &[120]),
    ("linear2.weight", &[84, 120]),
    ("linear2.bias", &[84]),
    ("output.weight", &[CLASSES, 84]),
    ("output.bias", &[CLASSES]),
];

impl Param {
    pub const ALL: [Param; 10] = [
        Param::Conv1Weight,
        Param::Conv1Bias,
        Param::Conv2Weight,
        Param::Conv2Bias,
        Param::Linear1Weight,
        Param::Linear1Bias,
        Param::Linear2Weight,
        Param::Linear2Bias,
        Param::OutputWeight,
        Param::OutputBias,
    ];

    /// The `state_dict` name, e.g. `conv1.weight`.
    pub const fn name(self) -> &'static str {
        SHAPES[self as usize].0
    }

    /// The shape, for a network of `classes` classes.
    pub fn shape(self, classes: usize) -> Vec<usize> {
        SHAPES[self as usize].1.iter().map(|&d| if d == CLASSES { classes } else { d }).collect()
    }

    /// Values in the tensor.
    pub const fn numel(self, classes: usize) -> usize {
        let shape = SHAPES[self as usize].1;
        let mut n = 1;
        let mut i = 0;
        while i < shape.len() {
            n *= if shape[i] == CLASSES { classes } else { shape[i] };
            i += 1;
        }
        n
    }

    /// Where the tensor starts in the flat block.
    pub const fn start(self, classes: usize) -> usize {
        let mut start = 0;
        let mut i = 0;
        while i < self as usize {
            start += Param::ALL[i].numel(classes);
            i += 1;
        }
        start
    }

    /// Where the tensor ends in the flat block.
    pub const fn end(self, classes: usize) -> usize {
        self.start(classes) + self.numel(classes)
    }

    /// Where the tensor lives in the flat block.
    pub const fn range(self, classes: usize) -> Range<usize> {
        self.start(classes)..self.end(classes)
    }

    /// Inputs feeding one output unit of the tensor's layer (a bias takes its weight's); PyTorch's default init
    /// draws from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
    pub const fn fan_in(self) -> usize {
        let weight = Param::ALL[self as usize - self as usize % 2];
        let shape = SHAPES[weight as usize].1;
        let mut n = 1;
        let mut i = 1;
        while i < shape.len() {
            n *= shape[i];
            i += 1;
        }
        n
    }

    /// Whether the tensor's size does not depend on the number of classes (all but the output layer's).
    pub const fn is_fixed(self) -> bool {
        (self as usize) < Param::OutputWeight as usize
    }

    /// Where a tensor that does not depend on the number of classes lives (see [`Param::is_fixed`]).
    pub const fn fixed_range(self) -> Range<usize> {
        assert!(self.is_fixed());
        self.range(CLASSES)
    }
}

/// Values in the flat block of a network of `classes` classes.
pub const fn num_params(classes: usize) -> usize {
    Param::OutputBias.end(classes)
}

/// Values before the output layer, the same for every number of classes.
pub(crate) const FIXED_PARAMS: usize = Param::OutputWeight.start(CLASSES);

/// 61,706: the parameters of the recipe's network, of ten classes.
#[cfg(test)]
pub(crate) const MNIST_PARAMS: usize = num_params(10);

/// The ten tensors of a flat block, by name: `Tensors::of(&params).conv2_weight` is conv2's weight
/// `(16, 6, 5, 5)`. The same for a gradient or the momentum, which share the layout.
#[derive(Debug)]
pub struct Tensors<T> {
    pub conv1_weight: T,
    pub conv1_bias: T,
    pub conv2_weight: T,
    pub conv2_bias: T,
    pub linear1_weight: T,
    pub linear1_bias: T,
    pub linear2_weight: T,
    pub linear2_bias: T,
    pub output_weight: T,
    pub output_bias: T,
}

impl<T> Tensors<T> {
    /// The tensors in [`Param::ALL`] order.
    fn from_array([c1w, c1b, c2w, c2b, l1w, l1b, l2w, l2b, ow, ob]: [T; 10]) -> Self {
        Tensors {
            conv1_weight: c1w,
            conv1_bias: c1b,
            conv2_weight: c2w,
            conv2_bias: c2b,
            linear1_weight: l1w,
            linear1_bias: l1b,
            linear2_weight: l2w,
            linear2_bias: l2b,
            output_weight: ow,
            output_bias: ob,
        }
    }
}

/// The number of classes of a flat block of `len` values, if that is the size of one (from [`MIN_CLASSES`] to
/// [`MAX_CLASSES`] classes).
pub(crate) fn block_classes(len: usize) -> Option<usize> {
    let per_class = Param::OutputWeight.numel(1) + Param::OutputBias.numel(1);
    let extra = len.checked_sub(FIXED_PARAMS)?;
    let classes = extra / per_class;
    (extra % per_class == 0 && (MIN_CLASSES..=MAX_CLASSES).contains(&classes)).then_some(classes)
}

/// The number of classes of a flat block of `len` values, which must be the size of one.
pub(crate) fn classes_of(len: usize) -> usize {
    block_classes(len).unwrap_or_else(|| panic!("not a parameter block: {len} values"))
}

impl<'a> Tensors<&'a [f32]> {
    /// Views of a flat block (of [`num_params`] values for some number of classes).
    pub fn of(flat: &'a [f32]) -> Self {
        let classes = classes_of(flat.len());
        Tensors::from_array(Param::ALL.map(|p| &flat[p.range(classes)]))
    }
}

impl<'a> Tensors<&'a mut [f32]> {
    /// Mutable views of a flat block (of [`num_params`] values for some number of classes).
    pub fn of_mut(flat: &'a mut [f32]) -> Self {
        let classes = classes_of(flat.len());
        let mut rest = flat;
        Tensors::from_array(Param::ALL.map(|p| {
            let (tensor, tail) = std::mem::take(&mut rest).split_at_mut(p.numel(classes));
            rest = tail;
            tensor
        }))
    }
}

/// PyTorch's default initialisation for `Conv2d` and `Linear` of the recipe's ten-class network (weights and
/// biases alike `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, a bias with its weight's fan-in), drawn from `seed`.
#[cfg(test)]
pub(crate) fn init_params(seed: u64) -> Vec<f32> {
    init_params_for(seed, 10)
}

/// `init_params` for a network of `classes` classes: the same draws in the same order, so every tensor before
/// the output layer is the same whatever the number of classes.
pub fn init_params_for(seed: u64, classes: usize) -> Vec<f32> {
    let mut rng = Rng::derived(seed, 1, 0);
    let mut flat = vec![0.0; num_params(classes)];
    for p in Param::ALL {
        let bound = 1.0 / (p.fan_in() as f32).sqrt();
        for v in &mut flat[p.range(classes)] {
            *v = rng.uniform(-bound, bound);
        }
    }
    flat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_and_layout_match_pytorch() {
        assert_eq!(MNIST_PARAMS, 61_706);
        assert_eq!(Param::Conv1Weight.range(10), 0..150);
        assert_eq!(Param::Linear1Weight.fixed_range(), 2572..50_572);
        for classes in [2, 10, 26, 1000] {
            let mut next = 0;
            for p in Param::ALL {
                assert_eq!(p.start(classes), next, "{}", p.name());
                assert_eq!(p.numel(classes), p.shape(classes).iter().product::<usize>());
                next = p.end(classes);
            }
            assert_eq!(next, num_params(classes));
            assert_eq!(classes_of(next), classes);
            assert_eq!(num_params(classes), FIXED_PARAMS + 85 * classes);
        }
        assert_eq!(Param::OutputWeight.shape(26), [26, 84]);
        let flat: Vec<f32> = (0..MNIST_PARAMS).map(|i| i as f32).collect();
        let t = Tensors::of(&flat);
        assert_eq!((t.linear2_bias[0], t.output_bias.len()), (Param::Linear2Bias.start(10) as f32, 10));
    }

    #[test]
    fn default_init_respects_pytorch_bounds_and_fills_them() {
        let p = init_params(42);
        for param in Param::ALL {
            let t = &p[param.range(10)];
            let fan_in: usize = param.shape(10).iter().skip(1).product();
            let fan_in = if param.shape(10).len() == 1 { param.fan_in() } else { fan_in };
            let bound = 1.0 / (fan_in as f32).sqrt();
            let max = t.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(max <= bound, "{}: {max} > {bound}", param.name());
            if t.len() >= 100 {
                // a uniform sample this large reaches close to its bound
                assert!(max > 0.9 * bound, "{}: {max} far below {bound}", param.name());
                let mean = t.iter().sum::<f32>() / t.len() as f32;
                assert!(mean.abs() < 0.2 * bound, "{}: mean {mean}", param.name());
            }
        }
        assert_eq!(Param::Conv1Bias.fan_in(), 25);
        assert_eq!(Param::OutputBias.fan_in(), 84);
        assert_ne!(init_params(1), init_params(2));
        assert_eq!(init_params(1), init_params(1));
        let wide = init_params_for(42, 26);
        assert_eq!(wide[..FIXED_PARAMS], p[..FIXED_PARAMS]);
        assert_eq!(wide[FIXED_PARAMS..FIXED_PARAMS + 840], p[FIXED_PARAMS..FIXED_PARAMS + 840]);
    }
}
