//! The parameter block: LeNet-5's ten tensors, named and shaped as PyTorch's `state_dict`, one after the other
//! in a single flat `f32` block (llm.c's layout). Gradients and momentum use the same layout, so the optimiser
//! is one loop over one slice, and a tensor is found by its name, never by its position.

use std::ops::Range;

use crate::rng::Rng;

/// A parameter tensor's name and shape, as in PyTorch's `state_dict`.
#[derive(Clone, Copy, Debug)]
pub struct ParamSpec {
    pub name: &'static str,
    pub shape: &'static [usize],
}

impl ParamSpec {
    pub const fn len(&self) -> usize {
        let mut n = 1;
        let mut i = 0;
        while i < self.shape.len() {
            n *= self.shape[i];
            i += 1;
        }
        n
    }
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Inputs feeding one output unit; PyTorch's default init draws from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
    pub const fn fan_in(&self) -> usize {
        self.len() / self.shape[0]
    }
}

/// Every parameter tensor, in `state_dict` order, which is also their order in the flat block.
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

/// Each [`Param`]'s name and shape, in the same order.
pub const PARAM_SPECS: [ParamSpec; 10] = [
    ParamSpec { name: "conv1.weight", shape: &[6, 1, 5, 5] },
    ParamSpec { name: "conv1.bias", shape: &[6] },
    ParamSpec { name: "conv2.weight", shape: &[16, 6, 5, 5] },
    ParamSpec { name: "conv2.bias", shape: &[16] },
    ParamSpec { name: "linear1.weight", shape: &[120, 400] },
    ParamSpec { name: "linear1.bias", shape: &[120] },
    ParamSpec { name: "linear2.weight", shape: &[84, 120] },
    ParamSpec { name: "linear2.bias", shape: &[84] },
    ParamSpec { name: "output.weight", shape: &[10, 84] },
    ParamSpec { name: "output.bias", shape: &[10] },
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

    pub const fn spec(self) -> ParamSpec {
        PARAM_SPECS[self as usize]
    }

    /// The `state_dict` name, e.g. `conv1.weight`.
    pub const fn name(self) -> &'static str {
        self.spec().name
    }

    /// Values in the tensor.
    pub const fn numel(self) -> usize {
        self.spec().len()
    }

    /// Where the tensor starts in the flat block.
    pub const fn start(self) -> usize {
        let mut start = 0;
        let mut i = 0;
        while i < self as usize {
            start += PARAM_SPECS[i].len();
            i += 1;
        }
        start
    }

    /// Where the tensor ends in the flat block.
    pub const fn end(self) -> usize {
        self.start() + self.numel()
    }

    /// Where the tensor lives in the flat block.
    pub const fn range(self) -> Range<usize> {
        self.start()..self.end()
    }

    /// The weight of the layer this tensor belongs to (itself for a weight): a bias takes its fan-in.
    const fn layer_weight(self) -> Param {
        Param::ALL[self as usize - self as usize % 2]
    }
}

/// 61,706.
pub const NUM_PARAMS: usize = Param::OutputBias.end();

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

impl<'a> Tensors<&'a [f32]> {
    /// Views of a flat block of [`NUM_PARAMS`] values.
    pub fn of(flat: &'a [f32]) -> Self {
        assert_eq!(flat.len(), NUM_PARAMS);
        Tensors::from_array(Param::ALL.map(|p| &flat[p.range()]))
    }
}

impl<'a> Tensors<&'a mut [f32]> {
    /// Mutable views of a flat block of [`NUM_PARAMS`] values.
    pub fn of_mut(flat: &'a mut [f32]) -> Self {
        assert_eq!(flat.len(), NUM_PARAMS);
        let mut rest = flat;
        Tensors::from_array(Param::ALL.map(|p| {
            let (tensor, tail) = std::mem::take(&mut rest).split_at_mut(p.numel());
            rest = tail;
            tensor
        }))
    }
}

/// PyTorch's default initialisation for `Conv2d` and `Linear` (weights and biases alike
/// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, a bias with its weight's fan-in), drawn from `seed`.
pub fn init_params(seed: u64) -> Vec<f32> {
    let mut rng = Rng::derived(seed, 1, 0);
    let mut flat = vec![0.0; NUM_PARAMS];
    for p in Param::ALL {
        let bound = 1.0 / (p.layer_weight().spec().fan_in() as f32).sqrt();
        for v in &mut flat[p.range()] {
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
        assert_eq!(NUM_PARAMS, 61_706);
        assert_eq!(Param::Conv1Weight.range(), 0..150);
        assert_eq!(Param::Linear1Weight.range(), 2572..50_572);
        let mut next = 0;
        for p in Param::ALL {
            assert_eq!(p.start(), next, "{}", p.name());
            next = p.end();
        }
        assert_eq!(next, NUM_PARAMS);
        let flat: Vec<f32> = (0..NUM_PARAMS).map(|i| i as f32).collect();
        let t = Tensors::of(&flat);
        assert_eq!((t.linear2_bias[0], t.output_bias.len()), (Param::Linear2Bias.start() as f32, 10));
    }

    #[test]
    fn default_init_respects_pytorch_bounds_and_fills_them() {
        let p = init_params(42);
        for param in Param::ALL {
            let (spec, t) = (param.spec(), &p[param.range()]);
            let fan_in = if spec.shape.len() == 1 {
                // bias: the fan-in of its weight
                PARAM_SPECS.iter().find(|w| w.name == spec.name.replace("bias", "weight")).unwrap().fan_in()
            } else {
                spec.fan_in()
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            let max = t.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(max <= bound, "{}: {max} > {bound}", spec.name);
            if t.len() >= 100 {
                // a uniform sample this large reaches close to its bound
                assert!(max > 0.9 * bound, "{}: {max} far below {bound}", spec.name);
                let mean = t.iter().sum::<f32>() / t.len() as f32;
                assert!(mean.abs() < 0.2 * bound, "{}: mean {mean}", spec.name);
            }
        }
        assert_ne!(init_params(1), init_params(2));
        assert_eq!(init_params(1), init_params(1));
    }
}
