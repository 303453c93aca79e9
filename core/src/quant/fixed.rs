//! Requantization in fixed point, as TFLite's reference kernels and CMSIS-NN's `_s8` kernels compute it: a real
//! multiplier `M` is held as a Q31 integer and a power of two, and `x * M` is computed with a rounding doubling
//! high multiply and a rounding right shift. The same integer operations run on any machine, so the C export
//! computes exactly what the engine computes.

/// A real multiplier `M` as `multiplier * 2^(shift - 31)`, `multiplier` in `[2^30, 2^31)` (or 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requant {
    pub multiplier: i32,
    pub shift: i32,
}

/// Largest left shift a multiplier may have: `M` below 2^30.
pub const MAX_SHIFT: i32 = 30;
/// Smallest right shift (as a negative `shift`): smaller multipliers are 0.
pub const MIN_SHIFT: i32 = -31;

impl Requant {
    /// TFLite's `QuantizeMultiplier`: `real` (finite, >= 0) as a Q31 multiplier and a shift. A multiplier too
    /// small for a 31-bit right shift is 0; one at or above 2^30 is refused (`None`).
    pub fn of(real: f64) -> Option<Requant> {
        if !(real.is_finite() && real >= 0.0) {
            return None;
        }
        if real == 0.0 {
            return Some(Requant { multiplier: 0, shift: 0 });
        }
        let (mantissa, mut exponent) = frexp(real);
        let mut q = (mantissa * (1u64 << 31) as f64).round() as i64;
        if q == 1 << 31 {
            q /= 2;
            exponent += 1;
        }
        if exponent < MIN_SHIFT {
            return Some(Requant { multiplier: 0, shift: 0 });
        }
        (exponent <= MAX_SHIFT).then_some(Requant { multiplier: q as i32, shift: exponent })
    }

    /// `x * M`, rounded: TFLite's `MultiplyByQuantizedMultiplier` (the left shift saturating).
    #[inline(always)]
    pub fn apply(self, x: i32) -> i32 {
        let left = self.shift.max(0);
        let right = (-self.shift).max(0);
        let shifted = ((x as i64) << left).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, self.multiplier), right)
    }

    /// The real multiplier it stands for.
    #[cfg(test)]
    pub fn real(self) -> f64 {
        self.multiplier as f64 * 2f64.powi(self.shift - 31)
    }
}

/// `real = mantissa * 2^exponent`, mantissa in [0.5, 1), for a positive finite `real` (subnormals are 0).
fn frexp(real: f64) -> (f64, i32) {
    let bits = real.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        return (0.0, MIN_SHIFT - 1);
    }
    let mantissa = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (mantissa, biased - 1022)
}

/// `(a * b * 2) >> 32`, rounded half away from zero, saturating the one overflowing case.
#[inline(always)]
fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge = if ab >= 0 { 1i64 << 30 } else { 1 - (1i64 << 30) };
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `x / 2^exponent`, rounded half away from zero.
#[inline(always)]
fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    let mask = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multiplier_stands_for_its_real_value_and_rounds_products_to_the_nearest() {
        for real in [1e-9, 0.000_123, 0.003_921_57, 0.25, 0.5, 0.999_999_9, 1.0, 3.7, 1000.0] {
            let r = Requant::of(real).unwrap();
            assert!((r.real() - real).abs() <= real * 1e-9, "{real}: {r:?}");
            for x in [-1_000_000, -12_345, -3, -1, 0, 1, 2, 7, 99, 54_321, 2_000_000] {
                let exact = x as f64 * r.real();
                let got = r.apply(x);
                // Within one of the product: TFLite rounds twice (the high multiply, then the shift).
                assert!((got as f64 - exact).abs() <= 1.0, "{real} * {x}: {got} vs {exact}");
            }
        }
        // TFLite's double rounding: 1 * 0.25 is 0.5 after the high multiply, which the shift rounds up to 1.
        assert_eq!(Requant::of(0.25).unwrap().apply(1), 1);
        // ... and -0.25 to 0: the nudge of a negative product is one short of a half.
        assert_eq!(Requant::of(0.25).unwrap().apply(-1), 0);
        assert_eq!(Requant::of(0.25).unwrap().apply(400), 100);
        assert_eq!(Requant::of(0.0), Some(Requant { multiplier: 0, shift: 0 }));
        assert_eq!(Requant::of(1e-12).unwrap().apply(1_000_000), 0);
        assert!(Requant::of(f64::NAN).is_none() && Requant::of(-1.0).is_none() && Requant::of(2f64.powi(31)).is_none());
    }

    #[test]
    fn the_fixed_point_operations_are_tflites() {
        // Values from TFLite's reference (gemmlowp) definitions.
        assert_eq!(saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN), i32::MAX);
        assert_eq!(saturating_rounding_doubling_high_mul(1 << 30, 1 << 30), 1 << 29);
        assert_eq!(saturating_rounding_doubling_high_mul(-(1 << 30), 1 << 30), -(1 << 29));
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(4, 1), 2);
        assert_eq!(rounding_divide_by_pot(-7, 2), -2);
        assert_eq!(rounding_divide_by_pot(7, 0), 7);
    }
}
