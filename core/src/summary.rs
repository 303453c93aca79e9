//! The architecture as a table: every layer's output shape, parameter count (with the formula behind it) and
//! FLOPs, all derived from the layer descriptions the model itself runs with.

use crate::nn::model::Head;
use crate::nn::model::{CONV1, CONV2, IMAGE_SIZE, LINEAR1, LINEAR2, POOL1, POOL2, output};

/// One row of the table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerRow {
    pub name: String,
    pub layer: String,
    /// `[N, C, H, W]` or `[N, F]`.
    pub output_shape: Vec<usize>,
    pub params: usize,
    /// How `params` is computed, e.g. `(5x5x6)x16 + 16`.
    pub formula: String,
    /// Forward FLOPs for the whole batch (a multiply-add counts two).
    pub flops: usize,
}

/// The multiply-adds (x2) of one MNIST image: forward (about 0.83 MFLOP), and forward plus backward in training
/// (about 2.26 MFLOP), counted as a direct convolution does them.
pub fn flops_per_image() -> (usize, usize) {
    (crate::nn::model::forward_flops_per_image(), crate::nn::model::train_flops_per_image())
}

/// The table for a batch of `batch` images through a network of `classes` classes.
pub fn layers(batch: usize, head: Head, classes: usize) -> Vec<LayerRow> {
    let n = batch;
    let mut rows = Vec::new();
    let mut push = |name: &str, layer: String, shape: Vec<usize>, params: usize, formula: String, flops: usize| {
        rows.push(LayerRow { name: name.into(), layer, output_shape: shape, params, formula, flops })
    };
    push("input", "image".into(), vec![n, 1, IMAGE_SIZE, IMAGE_SIZE], 0, String::new(), 0);
    for (name, d) in [("conv1", CONV1), ("conv2", CONV2)] {
        let s = d.out_size();
        push(
            name,
            format!("Conv2d({}, {}, kernel {}, padding {})", d.in_channels, d.out_channels, d.kernel, d.padding),
            vec![n, d.out_channels, s, s],
            d.weight_len() + d.out_channels,
            format!("({}x{}x{})x{} + {}", d.kernel, d.kernel, d.in_channels, d.out_channels, d.out_channels),
            n * d.forward_flops(),
        );
        push(&format!("{name}.relu"), "ReLU".into(), vec![n, d.out_channels, s, s], 0, String::new(), 0);
        let p = if name == "conv1" { POOL1 } else { POOL2 };
        push(
            &format!("pool{}", &name[4..]),
            "AvgPool2d(2, 2)".into(),
            vec![n, p.channels, p.out_size(), p.out_size()],
            0,
            String::new(),
            n * p.in_len(),
        );
    }
    push("flatten", "Flatten".into(), vec![n, LINEAR1.in_features], 0, String::new(), 0);
    for (name, d, relu) in [("linear1", LINEAR1, true), ("linear2", LINEAR2, true), ("output", output(classes), false)]
    {
        push(
            name,
            format!("Linear({}, {})", d.in_features, d.out_features),
            vec![n, d.out_features],
            d.weight_len() + d.out_features,
            format!("{}x{} + {}", d.in_features, d.out_features, d.out_features),
            n * d.forward_flops(),
        );
        if relu {
            push(&format!("{name}.relu"), "ReLU".into(), vec![n, d.out_features], 0, String::new(), 0);
        }
    }
    if head == Head::Sigmoid {
        push("sigmoid", "Sigmoid".into(), vec![n, classes], 0, String::new(), 0);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::{MNIST_PARAMS, num_params};

    #[test]
    fn totals_match_the_model() {
        let rows = layers(16, Head::Sigmoid, 10);
        assert_eq!(rows.iter().map(|r| r.params).sum::<usize>(), MNIST_PARAMS);
        let letters = layers(16, Head::Logits, 26);
        assert_eq!(letters.iter().map(|r| r.params).sum::<usize>(), num_params(26));
        assert_eq!(letters.last().unwrap().output_shape, vec![16, 26]);
        let conv2 = rows.iter().find(|r| r.name == "conv2").unwrap();
        assert_eq!(conv2.params, 2416);
        assert_eq!(conv2.formula, "(5x5x6)x16 + 16");
        assert_eq!(conv2.output_shape, vec![16, 16, 10, 10]);
        assert_eq!(rows.last().unwrap().name, "sigmoid");
        assert_eq!(rows.iter().find(|r| r.name == "flatten").unwrap().output_shape, vec![16, 400]);
    }
}
