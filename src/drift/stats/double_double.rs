//! Minimal double-double arithmetic (an unevaluated sum `hi + lo` of two
//! `f64`s, ~106 bits of significand).
//!
//! This is a port of the subset of the QD package (Hida, Li, Bailey) that
//! scipy's `xsf/cephes/dd_real.h` uses for `smirnov`. Only the operations the
//! Smirnov series needs are provided. The error-free transformations rely on
//! IEEE round-to-nearest and a correctly rounded fused multiply-add, which
//! `f64::mul_add` guarantees (in hardware or in software).

use std::ops::{Add, Div, Mul, Neg, Sub};

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct DoubleDouble {
    pub hi: f64,
    pub lo: f64,
}

/// `fl(a + b)` and its rounding error, assuming `|a| >= |b|`.
#[inline]
fn quick_two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let err = b - (s - a);
    (s, err)
}

/// `fl(a + b)` and its rounding error, for any `a`, `b` (Knuth).
#[inline]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let c = s - a;
    let d = b - c;
    let e = s - c;
    (s, (a - e) + d)
}

/// `fl(a * b)` and its rounding error, exact thanks to the FMA.
#[inline]
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, a.mul_add(b, -p))
}

impl DoubleDouble {
    pub const fn new(hi: f64) -> Self {
        Self { hi, lo: 0.0 }
    }

    pub fn is_finite(self) -> bool {
        self.hi.is_finite()
    }

    /// Equality with a plain double, with dd_real.h's semantics (`lo` must be 0).
    pub fn eq_f64(self, x: f64) -> bool {
        self.hi == x && self.lo == 0.0
    }

    /// `self < x` for a plain double, ordering on `hi` then `lo`.
    pub fn lt_f64(self, x: f64) -> bool {
        if self.hi < x {
            return true;
        }
        if self.hi > x {
            return false;
        }
        self.lo < 0.0
    }

    pub fn floor(self) -> Self {
        let mut hi = self.hi.floor();
        let mut lo = 0.0;
        if hi == self.hi {
            // High word already integral: the low word decides.
            let (s, e) = quick_two_sum(hi, self.lo.floor());
            hi = s;
            lo = e;
        }
        Self { hi, lo }
    }

    pub fn ldexp(self, exp: i32) -> Self {
        Self {
            hi: ldexp(self.hi, exp),
            lo: ldexp(self.lo, exp),
        }
    }

    /// Returns `(m, e)` with `self == m * 2^e` and `0.5 <= |m.hi| < 1`
    /// (or `|m.hi| == 1` with `m.lo` of opposite sign), as dd_real.h does.
    pub fn frexp(self) -> (Self, i32) {
        let (mut man, mut exponent) = frexp(self.hi);
        let mut b1 = ldexp(self.lo, -exponent);
        if man.abs() == 0.5 && man * b1 < 0.0 {
            man *= 2.0;
            b1 *= 2.0;
            exponent -= 1;
        }
        (Self { hi: man, lo: b1 }, exponent)
    }
}

impl From<f64> for DoubleDouble {
    fn from(x: f64) -> Self {
        Self::new(x)
    }
}

impl Neg for DoubleDouble {
    type Output = Self;
    fn neg(self) -> Self {
        Self {
            hi: -self.hi,
            lo: -self.lo,
        }
    }
}

impl Add for DoubleDouble {
    type Output = Self;
    /// IEEE-style error bound addition (Briggs/Kahan).
    fn add(self, rhs: Self) -> Self {
        let (s1, s2) = two_sum(self.hi, rhs.hi);
        let (t1, t2) = two_sum(self.lo, rhs.lo);
        let s2 = s2 + t1;
        let (s1, s2) = quick_two_sum(s1, s2);
        let s2 = s2 + t2;
        let (hi, lo) = quick_two_sum(s1, s2);
        Self { hi, lo }
    }
}

impl Add<f64> for DoubleDouble {
    type Output = Self;
    fn add(self, rhs: f64) -> Self {
        let (s1, s2) = two_sum(self.hi, rhs);
        let (hi, lo) = quick_two_sum(s1, s2 + self.lo);
        Self { hi, lo }
    }
}

impl Sub for DoubleDouble {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        self + (-rhs)
    }
}

impl Sub<f64> for DoubleDouble {
    type Output = Self;
    fn sub(self, rhs: f64) -> Self {
        let (s1, s2) = two_sum(self.hi, -rhs);
        let (hi, lo) = quick_two_sum(s1, s2 + self.lo);
        Self { hi, lo }
    }
}

impl Mul for DoubleDouble {
    type Output = Self;
    fn mul(self, rhs: Self) -> Self {
        let (p1, p2) = two_prod(self.hi, rhs.hi);
        let p2 = p2 + (self.hi * rhs.lo + self.lo * rhs.hi);
        let (hi, lo) = quick_two_sum(p1, p2);
        Self { hi, lo }
    }
}

impl Mul<f64> for DoubleDouble {
    type Output = Self;
    fn mul(self, rhs: f64) -> Self {
        let (p1, e1) = two_prod(self.hi, rhs);
        let (p2, e2) = two_prod(self.lo, rhs);
        let (hi, lo) = quick_two_sum(p1, e2 + p2 + e1);
        Self { hi, lo }
    }
}

impl Mul<DoubleDouble> for f64 {
    type Output = DoubleDouble;
    fn mul(self, rhs: DoubleDouble) -> DoubleDouble {
        // Same operation order as dd_real.h's `double * double_double`.
        let (p1, e1) = two_prod(self, rhs.hi);
        let (p2, e2) = two_prod(self, rhs.lo);
        let (hi, lo) = quick_two_sum(p1, e2 + p2 + e1);
        DoubleDouble { hi, lo }
    }
}

impl Div for DoubleDouble {
    type Output = Self;
    /// Long division with three quotient digits, as in QD's accurate divide.
    fn div(self, rhs: Self) -> Self {
        let q1 = self.hi / rhs.hi;
        let r = self - rhs * q1;
        let q2 = r.hi / rhs.hi;
        let r = r - rhs * q2;
        let q3 = r.hi / rhs.hi;
        let (q1, q2) = quick_two_sum(q1, q2);
        DoubleDouble { hi: q1, lo: q2 } + q3
    }
}

impl Div<f64> for DoubleDouble {
    type Output = Self;
    fn div(self, rhs: f64) -> Self {
        self / DoubleDouble::new(rhs)
    }
}

impl Div<DoubleDouble> for f64 {
    type Output = DoubleDouble;
    fn div(self, rhs: DoubleDouble) -> DoubleDouble {
        DoubleDouble::new(self) / rhs
    }
}

/// C's `frexp`: `x == m * 2^e` with `0.5 <= |m| < 1`; zero, infinities and
/// NaN are returned unchanged with exponent 0.
pub(crate) fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: normalise first so the exponent field is meaningful.
        let (m, e) = frexp(x * f64::from_bits(0x4350_0000_0000_0000)); // 2^54
        return (m, e - 54);
    }
    let m = f64::from_bits((bits & !(0x7ff_u64 << 52)) | (1022_u64 << 52));
    (m, biased - 1022)
}

/// C's `ldexp`/`scalbn`: `x * 2^n` with a single rounding (musl's algorithm,
/// which scales in steps that never pass through the subnormal range early).
pub(crate) fn ldexp(x: f64, n: i32) -> f64 {
    let two_1023 = f64::from_bits(0x7fe0_0000_0000_0000);
    // 2^-1022 * 2^53: staying well above the subnormal range avoids double
    // rounding when the final result is subnormal.
    let two_m969 = f64::from_bits(0x0360_0000_0000_0000);
    let mut y = x;
    let mut n = n;
    if n > 1023 {
        y *= two_1023;
        n -= 1023;
        if n > 1023 {
            y *= two_1023;
            n -= 1023;
            n = n.min(1023);
        }
    } else if n < -1022 {
        y *= two_m969;
        n += 1022 - 53;
        if n < -1022 {
            y *= two_m969;
            n += 1022 - 53;
            n = n.max(-1022);
        }
    }
    y * f64::from_bits(((0x3ff + n) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frexp_ldexp_roundtrip() {
        for &x in &[1.0, 0.75, -3.5, 1e-310, 5e-324, 1e300, f64::MIN_POSITIVE] {
            let (m, e) = frexp(x);
            assert!((0.5..1.0).contains(&m.abs()), "{x} -> {m}");
            assert_eq!(ldexp(m, e), x);
        }
        assert_eq!(ldexp(1.0, -1074), 5e-324);
        assert_eq!(ldexp(1.0, 1024), f64::INFINITY);
        assert_eq!(ldexp(1.5, -1075), 5e-324); // rounds once, to nearest
    }

    #[test]
    fn division_is_more_precise_than_f64() {
        let third = DoubleDouble::new(1.0) / 3.0;
        let back = third * 3.0;
        assert_eq!(back.hi, 1.0);
        assert!(back.lo.abs() < 1e-31);
    }
}
