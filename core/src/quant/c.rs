//! An int8 network as plain C99 for microcontrollers: `lenet5_model.h` (the interface) and `lenet5_model.c` (the
//! weights in `const` arrays, which stay in flash, and the integer network of [`super::engine`], operation for
//! operation, beside which it is kept). No malloc, no stdio, no libm, no floating point: the same integers as the engine
//! on any machine with a C compiler whose `>>` of a negative number shifts in sign bits (GCC, Clang, Arm's
//! compilers and every compiler for Cortex-M do).

use std::fmt::Write as _;

use super::QuantModel;
use super::engine::QLayer;

/// The header's name.
pub(crate) const HEADER: &str = "lenet5_model.h";

pub(crate) fn header(model: &QuantModel) -> String {
    format!(
        r#"/* LeNet-5 as int8, written by lenet5 export --c. C99: no malloc, no stdio, no libm, no float. */
#ifndef LENET5_MODEL_H
#define LENET5_MODEL_H

#include <stdint.h>

#define LENET5_NUM_CLASSES {k}          /* K */

extern const char *const lenet5_class_names[LENET5_NUM_CLASSES];

/* pixels: 28x28 grey, 0..255, row-major, white ink on black as in MNIST's IDX files.
   scores: LENET5_NUM_CLASSES int32 values (larger = more likely), or NULL.
   Returns the predicted class index. */
int lenet5_predict(const uint8_t pixels[784], int32_t *scores);

#endif
"#,
        k = model.classes()
    )
}

/// A C string literal of `text`: quotes, backslashes, `?` (trigraphs), control characters and every byte
/// beyond ASCII escaped, so that no name can end the literal or the comment it is not in.
fn c_string(text: &str) -> String {
    let mut out = String::from("\"");
    for b in text.bytes() {
        match b {
            b'"' | b'\\' | b'?' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03o}")),
        }
    }
    out.push('"');
    out
}

/// `const` arrays of one layer: `NAME_weight`, `NAME_bias`, `NAME_multiplier`, `NAME_shift`.
fn layer_arrays(out: &mut String, name: &str, layer: &QLayer) {
    let o = layer.outputs();
    let list = |values: &mut dyn Iterator<Item = i64>| {
        let v: Vec<String> = values.map(|x| x.to_string()).collect();
        v.chunks(20).map(|line| format!("    {}", line.join(", "))).collect::<Vec<_>>().join(",\n")
    };
    let weights = list(&mut layer.weight.iter().map(|&w| w as i64));
    let _ = writeln!(out, "static const int8_t {name}_weight[{}] = {{\n{weights}\n}};", layer.weight.len());
    let bias = list(&mut layer.bias.iter().map(|&b| b as i64));
    // INT32_MIN has no literal of its own: written as a sum.
    let bias = bias.replace("-2147483648", "(-2147483647 - 1)");
    let _ = writeln!(out, "static const int32_t {name}_bias[{o}] = {{\n{bias}\n}};");
    let m = list(&mut layer.requant.iter().map(|r| r.multiplier as i64));
    let _ = writeln!(out, "static const int32_t {name}_multiplier[{o}] = {{\n{m}\n}};");
    let s = list(&mut layer.requant.iter().map(|r| r.shift as i64));
    let _ = writeln!(out, "static const int8_t {name}_shift[{o}] = {{\n{s}\n}};\n");
}

pub(crate) fn source(model: &QuantModel) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "/* LeNet-5 as int8, written by lenet5 export --c: the weights (int8, per output channel), biases (int32) and\n   \
         fixed-point requantization (TFLite/CMSIS-NN _s8) of lenet5's int8 engine, which this code repeats. */\n\
         #include \"{HEADER}\"\n\n#include <stddef.h>\n"
    );
    let names: Vec<String> = model.class_names.iter().map(|n| format!("    {}", c_string(n))).collect();
    let _ =
        writeln!(out, "const char *const lenet5_class_names[LENET5_NUM_CLASSES] = {{\n{}\n}};\n", names.join(",\n"));
    let l = &model.layers;
    for (name, layer) in [
        ("conv1", &l.conv1),
        ("conv2", &l.conv2),
        ("linear1", &l.linear1),
        ("linear2", &l.linear2),
        ("output", &l.output),
    ] {
        layer_arrays(&mut out, name, layer);
    }
    out.push_str(CODE);
    out
}

/// The network: the integer operations of `lenet5_core::quant::engine` and `fixed`, in C.
const CODE: &str = r#"/* (a * b * 2) >> 32, rounded half away from zero, saturating the one overflowing case. */
static int32_t rounding_doubling_high_mul(int32_t a, int32_t b)
{
    int64_t ab;
    int64_t nudge;
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* x / 2^exponent, rounded half away from zero. */
static int32_t rounding_divide_by_pot(int32_t x, int exponent)
{
    int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* x times the real multiplier multiplier * 2^(shift - 31), rounded. */
static int32_t requantize(int32_t x, int32_t multiplier, int shift)
{
    int left = shift > 0 ? shift : 0;
    int right = shift > 0 ? 0 : -shift;
    int64_t shifted = (int64_t)x * ((int64_t)1 << left);
    if (shifted > INT32_MAX) {
        shifted = INT32_MAX;
    } else if (shifted < INT32_MIN) {
        shifted = INT32_MIN;
    }
    return rounding_divide_by_pot(rounding_doubling_high_mul((int32_t)shifted, multiplier), right);
}

/* ReLU of a requantized accumulator, as the offset of an int8 with zero point -128. */
static uint8_t relu_requantize(int32_t acc, int32_t multiplier, int shift)
{
    int32_t v = requantize(acc, multiplier, shift);
    return (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

/* A 5x5 convolution of in (channels, size, size) zero-padded by pad, ReLU, and a 2x2 average pool. */
static void conv_relu_pool(const int8_t *weight, const int32_t *bias, const int32_t *multiplier,
                           const int8_t *shift, int outputs, const uint8_t *in, int channels, int size, int pad,
                           uint8_t *out)
{
    int pooled = (size + 2 * pad - 4) / 2;
    int o, py, px, d, c, ky, kx;
    for (o = 0; o < outputs; o++) {
        const int8_t *w = weight + o * channels * 25;
        for (py = 0; py < pooled; py++) {
            for (px = 0; px < pooled; px++) {
                uint32_t sum = 0;
                for (d = 0; d < 4; d++) {
                    int y = 2 * py + d / 2;
                    int x = 2 * px + d % 2;
                    int32_t acc = bias[o];
                    for (c = 0; c < channels; c++) {
                        for (ky = 0; ky < 5; ky++) {
                            int iy = y + ky - pad;
                            if (iy < 0 || iy >= size) {
                                continue;
                            }
                            for (kx = 0; kx < 5; kx++) {
                                int ix = x + kx - pad;
                                if (ix < 0 || ix >= size) {
                                    continue;
                                }
                                acc += (int32_t)in[(c * size + iy) * size + ix] * w[(c * 5 + ky) * 5 + kx];
                            }
                        }
                    }
                    sum += relu_requantize(acc, multiplier[o], shift[o]);
                }
                out[(o * pooled + py) * pooled + px] = (uint8_t)((sum + 2) >> 2);
            }
        }
    }
}

/* bias + sum(in * weight) of output o. */
static int32_t dot(const int8_t *weight, const int32_t *bias, int inputs, int o, const uint8_t *in)
{
    int32_t acc = bias[o];
    int i;
    for (i = 0; i < inputs; i++) {
        acc += (int32_t)in[i] * weight[o * inputs + i];
    }
    return acc;
}

static void linear_relu(const int8_t *weight, const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                        int outputs, int inputs, const uint8_t *in, uint8_t *out)
{
    int o;
    for (o = 0; o < outputs; o++) {
        out[o] = relu_requantize(dot(weight, bias, inputs, o, in), multiplier[o], shift[o]);
    }
}

int lenet5_predict(const uint8_t pixels[784], int32_t *scores)
{
    uint8_t pool1[6 * 14 * 14];
    uint8_t pool2[16 * 5 * 5];
    uint8_t hidden1[120];
    uint8_t hidden2[84];
    int32_t best_score = 0;
    int best = 0;
    int k;
    conv_relu_pool(conv1_weight, conv1_bias, conv1_multiplier, conv1_shift, 6, pixels, 1, 28, 2, pool1);
    conv_relu_pool(conv2_weight, conv2_bias, conv2_multiplier, conv2_shift, 16, pool1, 6, 14, 0, pool2);
    linear_relu(linear1_weight, linear1_bias, linear1_multiplier, linear1_shift, 120, 400, pool2, hidden1);
    linear_relu(linear2_weight, linear2_bias, linear2_multiplier, linear2_shift, 84, 120, hidden1, hidden2);
    for (k = 0; k < LENET5_NUM_CLASSES; k++) {
        int32_t s = requantize(dot(output_weight, output_bias, 84, k, hidden2), output_multiplier[k], output_shift[k]);
        if (scores != NULL) {
            scores[k] = s;
        }
        if (k == 0 || s > best_score) {
            best_score = s;
            best = k;
        }
    }
    return best;
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_never_ends_its_string_literal() {
        assert_eq!(c_string("plain 7"), "\"plain 7\"");
        assert_eq!(c_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(c_string("??/"), "\"\\?\\?/\"");
        assert_eq!(c_string("*/\n\u{e9}"), "\"*/\\012\\303\\251\"");
    }
}
