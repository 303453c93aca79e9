//! `exp`, `ln` and `sin_cos` of `f32`, computed the same way on every platform.
//!
//! `f32::exp`, `f32::ln` and `f32::sin_cos` call the platform's math library (glibc natively, a port of musl's on wasm32, the
//! system's elsewhere), and two libraries may differ in the last bit for some inputs: then a training run would
//! give other bits in a browser than natively. These are our own: the value is computed in `f64` with a relative
//! error below 1e-14, then rounded once to `f32`, with nothing but IEEE additions, multiplications, divisions and
//! exact bit operations, which every platform does alike. The result is the correctly rounded one except when
//! the exact value lies within 1e-14 of halfway between two `f32`s, and within one ulp always (the tests check
//! both functions against `f64` over millions of inputs).

/// ln 2, to `f64` precision.
const LN_2: f64 = std::f64::consts::LN_2;

/// e^x.
///
/// Without a branch, so that [`exp_in_place`] runs it on vector lanes: the value is computed for `x` clamped
/// to the range where it is finite and not zero, and the ends and NaN are picked after.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Beyond these e^x rounds to infinity or to zero in f32 (e^89 > f32::MAX, e^-104 < half the smallest
    // subnormal), and inside them 2^k below is a normal f64.
    let inside = x.clamp(-104.0, 89.0) as f64;
    // x = k ln 2 + r with |r| <= ln 2 / 2: e^x = 2^k e^r. k ln 2 is exact enough in f64: |k| <= 150, so its
    // rounding error is below 1e-14 of ln 2's, far under what rounding to f32 can see.
    let k = (inside / LN_2).round();
    let r = inside - k * LN_2;
    // e^r by its Taylor series to r^12 / 12!: the next term is below 2e-16 for |r| <= 0.35.
    let mut p = 1.0 / 479_001_600.0;
    for factorial in [39_916_800.0, 3_628_800.0, 362_880.0, 40_320.0, 5_040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        p = p * r + 1.0 / factorial;
    }
    let two_k = f64::from_bits(((k as i32 + 1023) as u64) << 52);
    let e = (p * two_k) as f32;
    if x.is_nan() {
        x
    } else if x > 89.0 {
        f32::INFINITY
    } else if x < -104.0 {
        0.0
    } else {
        e
    }
}

/// [`exp`] of each value, in place: the same bits, several values at once on the vector lanes this CPU has
/// (a tenth of an int8 evaluation's time went to the exponentials of its losses one at a time).
pub(crate) fn exp_in_place(values: &mut [f32]) {
    exp_dispatched(values)
}

crate::simd::dispatch! {
    fn exp_dispatched(values: &mut [f32]) => exp_body
}

#[inline(always)]
fn exp_body<const FMA: bool>(values: &mut [f32]) {
    for v in values {
        *v = exp(*v);
    }
}

/// The natural logarithm: NaN below zero, minus infinity at zero.
pub(crate) fn ln(x: f32) -> f32 {
    if x.is_nan() || x < 0.0 {
        return f32::NAN;
    }
    if x == 0.0 {
        return f32::NEG_INFINITY;
    }
    if x == f32::INFINITY {
        return x;
    }
    // x = m 2^e with m in [sqrt(1/2), sqrt(2)) (every f32, subnormals included, is a normal f64).
    let bits = (x as f64).to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    // ln m = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...) with s = (m - 1) / (m + 1), |s| <= 0.172: to s^23, the
    // next term is below 1e-18.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut p = 1.0 / 23.0;
    for odd in [21.0, 19.0, 17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0] {
        p = p * s2 + 1.0 / odd;
    }
    (2.0 * s * p + e as f64 * LN_2) as f32
}

/// sin x and cos x (NaN for an infinite or NaN x), within one ulp for |x| below 1e5 (tested), far wider than the
/// angles of augmentation.
pub(crate) fn sin_cos(x: f32) -> (f32, f32) {
    if !x.is_finite() {
        return (f32::NAN, f32::NAN);
    }
    // x = k pi/2 + r with |r| <= pi/4; k pi/2 is exact enough in f64 for |k| below 1e5 (its rounding error is
    // far below what rounding to f32 can see).
    let x = x as f64;
    let k = (x / std::f64::consts::FRAC_PI_2).round();
    let r = x - k * std::f64::consts::FRAC_PI_2;
    // Taylor series to r^17 / 17! and r^18 / 18!: the next terms are below 1e-19 for |r| <= pi/4.
    let r2 = r * r;
    let mut sin = 1.0 / 355_687_428_096_000.0;
    for factorial in [-1_307_674_368_000.0, 6_227_020_800.0, -39_916_800.0, 362_880.0, -5_040.0, 120.0, -6.0, 1.0] {
        sin = sin * r2 + 1.0 / factorial;
    }
    let sin = sin * r;
    let mut cos = -1.0 / 6_402_373_705_728_000.0;
    for factorial in
        [20_922_789_888_000.0, -87_178_291_200.0, 479_001_600.0, -3_628_800.0, 40_320.0, -720.0, 24.0, -2.0, 1.0]
    {
        cos = cos * r2 + 1.0 / factorial;
    }
    match (k as i64).rem_euclid(4) {
        0 => (sin as f32, cos as f32),
        1 => (cos as f32, -sin as f32),
        2 => (-sin as f32, -cos as f32),
        _ => (-cos as f32, sin as f32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// How many f32 steps apart `a` and `b` are (both finite, or equal).
    fn ulps(a: f32, b: f32) -> u32 {
        if a == b || (a.is_nan() && b.is_nan()) {
            return 0;
        }
        let key = |v: f32| {
            let i = v.to_bits() as i32;
            if i < 0 { i32::MIN - i } else { i }
        };
        key(a).abs_diff(key(b))
    }

    /// Every input checked: a sweep of the range that matters, random bit patterns, and the edges.
    fn inputs(low: f32, high: f32) -> Vec<f32> {
        let mut rng = Rng::new(7);
        let mut v: Vec<f32> = (0..1_000_000).map(|i| low + (high - low) * i as f32 / 1e6).collect();
        v.extend((0..1_000_000).map(|_| f32::from_bits(rng.next_u64() as u32)).filter(|x| x.is_finite()));
        v.extend([0.0, -0.0, 1.0, -1.0, f32::MIN_POSITIVE, 1e-45, f32::MAX, -f32::MAX, 88.72, -87.33, -103.9]);
        v
    }

    #[test]
    fn exp_in_place_gives_exps_bits() {
        let mut values = inputs(-110.0, 90.0);
        values.extend([f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 89.0, 89.000_01, -104.0, -104.000_01]);
        values.extend([0.0, -0.0, f32::MAX, f32::MIN, f32::MIN_POSITIVE, -f32::MIN_POSITIVE, 1e-45, -1e-45]);
        let mut got = values.clone();
        exp_in_place(&mut got);
        for (x, got) in values.iter().zip(got) {
            assert_eq!(got.to_bits(), exp(*x).to_bits(), "exp({x:e})");
        }
    }

    #[test]
    fn exp_is_within_one_ulp_of_the_exact_value_and_mostly_exact() {
        let (mut worst, mut off) = (0, 0);
        for x in inputs(-110.0, 90.0) {
            let want = (x as f64).exp() as f32;
            let d = ulps(exp(x), want);
            assert!(d <= 1, "exp({x:e}) = {:e}, want {want:e}", exp(x));
            worst = worst.max(d);
            off += (d > 0) as usize;
        }
        assert!(off < 100, "{off} results are one ulp off the correctly rounded value");
        assert_eq!(worst.min(1), worst);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!((exp(f32::INFINITY), exp(f32::NEG_INFINITY), exp(0.0)), (f32::INFINITY, 0.0, 1.0));
    }

    #[test]
    fn sin_cos_is_within_one_ulp_of_the_exact_value_and_mostly_exact() {
        let mut off = 0;
        for x in inputs(-7.0, 7.0).into_iter().filter(|x| x.abs() < 1e5) {
            let (sin, cos) = sin_cos(x);
            let want = ((x as f64).sin() as f32, (x as f64).cos() as f32);
            let (ds, dc) = (ulps(sin, want.0), ulps(cos, want.1));
            assert!(ds <= 1 && dc <= 1, "sin_cos({x:e}) = ({sin:e}, {cos:e}), want {want:?}");
            off += (ds > 0) as usize + (dc > 0) as usize;
        }
        assert!(off < 100, "{off} results are one ulp off the correctly rounded value");
        assert_eq!(sin_cos(0.0), (0.0, 1.0));
        assert!(sin_cos(f32::INFINITY).0.is_nan() && sin_cos(f32::NAN).1.is_nan());
    }

    #[test]
    fn ln_is_within_one_ulp_of_the_exact_value_and_mostly_exact() {
        let mut off = 0;
        for x in inputs(0.0, 100.0).into_iter().map(f32::abs) {
            let want = (x as f64).ln() as f32;
            let d = ulps(ln(x), want);
            assert!(d <= 1, "ln({x:e}) = {:e}, want {want:e}", ln(x));
            off += (d > 0) as usize;
        }
        assert!(off < 100, "{off} results are one ulp off the correctly rounded value");
        assert!(ln(-1.0).is_nan() && ln(f32::NAN).is_nan());
        assert_eq!((ln(0.0), ln(f32::INFINITY), ln(1.0)), (f32::NEG_INFINITY, f32::INFINITY, 0.0));
    }
}
