//! The Python exceptions the reference raises, and the float operations that raise them.
//!
//! The processor dead-letters a record with `f"{type(exc).__name__}: {exc}"` and keeps every
//! change made before the exception, so each function here fails exactly where Python's
//! operator or builtin would, with the same type name and message.

/// A Python exception the reference would raise here: its type name and its str().
#[derive(Debug, Clone, PartialEq)]
pub struct Raised {
    pub kind: &'static str,
    pub message: String,
}

pub type Res<T> = Result<T, Raised>;

impl Raised {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Raised {
            kind,
            message: message.into(),
        }
    }

    /// The dead-letter reason: `f"{type(exc).__name__}: {exc}"`.
    pub fn reason(&self) -> String {
        format!("{}: {}", self.kind, self.message)
    }
}

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// Python's float `/` (also float / int): ZeroDivisionError when the divisor is zero (either
/// sign); no check for overflow, as CPython's float_div.
#[inline]
pub fn div(a: f64, b: f64) -> Res<f64> {
    if b == 0.0 {
        return Err(Raised::new("ZeroDivisionError", "float division by zero"));
    }
    Ok(a / b)
}

/// `math.sqrt` (CPython's math_1 with can_overflow 0): ValueError for x < 0; NaN gives NaN,
/// -0.0 gives -0.0.
#[inline]
pub fn sqrt(x: f64) -> Res<f64> {
    let r = x.sqrt();
    if r.is_nan() && !x.is_nan() {
        return Err(Raised::new("ValueError", "math domain error"));
    }
    Ok(r)
}

extern "C" {
    // The C library's erf, which CPython's math.erf calls (Python 3.11, math_1a): the same
    // glibc on this machine, so the same bits. Rust has no erf of its own.
    #[link_name = "erf"]
    fn c_erf(x: f64) -> f64;
    // pow: float ** float is CPython's float_pow, which calls the C library's pow.
    #[link_name = "pow"]
    fn c_pow(x: f64, y: f64) -> f64;
}

/// `math.erf`: never raises (|erf| <= 1, so math_1a's range check never fires).
#[inline]
pub fn erf(x: f64) -> f64 {
    // SAFETY: a pure libm function of one double.
    unsafe { c_erf(x) }
}

/// `x ** y` of two floats (CPython's float_pow), for the cases the core uses (x finite or not,
/// y a finite non-integer or integer). OverflowError "(34, 'Numerical result out of range')"
/// when a finite x gives an infinite result; ZeroDivisionError for 0 to a negative power.
pub fn pow(x: f64, y: f64) -> Res<f64> {
    if y == 0.0 {
        return Ok(1.0);
    }
    if x.is_nan() {
        return Ok(if y == 0.0 { 1.0 } else { x });
    }
    if y.is_nan() {
        return Ok(if x == 1.0 { 1.0 } else { y });
    }
    if x == 0.0 && y < 0.0 && y.is_finite() {
        return Err(Raised::new(
            "ZeroDivisionError",
            "0.0 cannot be raised to a negative power",
        ));
    }
    if x < 0.0 && x.is_finite() && y.is_finite() && y != y.floor() {
        // Python returns a complex number here; the core never asks for one.
        return Err(Raised::new(
            "ValueError",
            "negative number cannot be raised to a fractional power",
        ));
    }
    // SAFETY: a pure libm function of two doubles.
    let r = unsafe { c_pow(x, y) };
    if r.is_infinite() && x.is_finite() && y.is_finite() {
        return Err(Raised::new(
            "OverflowError",
            "(34, 'Numerical result out of range')",
        ));
    }
    Ok(r)
}

/// Python's `max(a, b)` of two floats: `b if b > a else a` (the first on ties and NaN).
#[inline]
pub fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// Python's `min(a, b)` of two floats: `b if b < a else a`.
#[inline]
pub fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// `int(x)` of a float: truncation toward zero; OverflowError for infinities, ValueError for
/// NaN. Python ints are unbounded: a finite float beyond i64 is an OverflowError here (the core
/// only converts event-time bounded values).
pub fn int_of_float(x: f64) -> Res<i64> {
    if x.is_nan() {
        return Err(Raised::new(
            "ValueError",
            "cannot convert float NaN to integer",
        ));
    }
    if x.is_infinite() {
        return Err(Raised::new(
            "OverflowError",
            "cannot convert float infinity to integer",
        ));
    }
    let t = x.trunc();
    // 2^63 is exact as a float; i64 holds [-2^63, 2^63).
    if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&t) {
        return Err(Raised::new(
            "OverflowError",
            "int too large for the compiled core",
        ));
    }
    Ok(t as i64)
}

/// Python's exact comparison of a float with an int (float_richcompare): no rounding of the
/// int to a float. Returns the ordering of `f` against `i`, None when `f` is NaN.
pub fn cmp_float_int(f: f64, i: i64) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering;
    if f.is_nan() {
        return None;
    }
    // |i| < 2^53: the int is exact as a float, IEEE comparison is exact.
    if (-(1i64 << 53)..=(1i64 << 53)).contains(&i) {
        return f.partial_cmp(&(i as f64));
    }
    if f >= 9_223_372_036_854_775_808.0 {
        return Some(Ordering::Greater);
    }
    if f < -9_223_372_036_854_775_808.0 {
        return Some(Ordering::Less);
    }
    // f is within i64's range here and |f| >= 2^53 or a fraction near i: compare in i128.
    let t = f.trunc();
    let ti = t as i128;
    match ti.cmp(&(i as i128)) {
        Ordering::Equal => {
            let frac = f - t;
            Some(if frac > 0.0 {
                Ordering::Greater
            } else if frac < 0.0 {
                Ordering::Less
            } else {
                Ordering::Equal
            })
        }
        o => Some(o),
    }
}

/// `f >= i` as Python compares a float with an int.
#[inline]
pub fn float_ge_int(f: f64, i: i64) -> bool {
    matches!(
        cmp_float_int(f, i),
        Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
    )
}

/// `f <= i` as Python compares a float with an int.
#[inline]
pub fn float_le_int(f: f64, i: i64) -> bool {
    matches!(
        cmp_float_int(f, i),
        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
    )
}

/// `f < i` as Python compares a float with an int.
#[inline]
pub fn float_lt_int(f: f64, i: i64) -> bool {
    matches!(cmp_float_int(f, i), Some(std::cmp::Ordering::Less))
}

/// The ValueError of unpacking a list of the wrong length (`a, b = xs`).
pub fn unpack_error(expected: usize, got: usize) -> Raised {
    if got > expected {
        Raised::new(
            "ValueError",
            format!("too many values to unpack (expected {expected})"),
        )
    } else {
        Raised::new(
            "ValueError",
            format!("not enough values to unpack (expected {expected}, got {got})"),
        )
    }
}

/// The ValueError of `a, *rest = xs` when xs is shorter than the named targets.
pub fn unpack_at_least_error(expected: usize, got: usize) -> Raised {
    Raised::new(
        "ValueError",
        format!("not enough values to unpack (expected at least {expected}, got {got})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins() {
        assert_eq!(py_max(f64::NAN, 1.0).to_bits(), f64::NAN.to_bits());
        assert_eq!(py_max(1.0, f64::NAN), 1.0);
        assert_eq!(py_max(-0.0, 0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(py_min(0.0, -0.0).to_bits(), 0.0f64.to_bits());
        assert!(div(1.0, -0.0).is_err());
        assert!(sqrt(-1e-300).is_err());
        assert!(sqrt(f64::NAN).unwrap().is_nan());
        assert_eq!(sqrt(-0.0).unwrap().to_bits(), (-0.0f64).to_bits());
        assert!(float_ge_int(9007199254740993.0, 9007199254740992));
        assert!(!float_ge_int(9007199254740992.0, 9007199254740993));
        assert!(float_lt_int(0.5, 1) && float_ge_int(0.5, 0) && !float_le_int(f64::NAN, 0));
        assert_eq!(int_of_float(-2.7).unwrap(), -2);
        assert_eq!(pow(0.1, 2.0).unwrap(), 0.1f64.powf(2.0));
        assert!(pow(1e200, 2.0).is_err());
    }
}
