//! A JSON writer giving orjson 3.13's bytes (pydantic's agree), and Python's repr of a float.
//!
//! The checkpoints and the derived records must be byte-identical to the Python reference's
//! `orjson.dumps`, so every number and string is written here, never by serde.

/// orjson's float: ryu's shortest digits, with "e+" for a positive exponent (1e+16, 1.5e+300;
/// 1e-7 as is) and `null` for NaN and the infinities.
pub fn f64(out: &mut Vec<u8>, x: f64) {
    if !x.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(x).as_bytes();
    match s.iter().position(|&c| c == b'e') {
        Some(e) if s.get(e + 1) != Some(&b'-') => {
            out.extend_from_slice(&s[..=e]);
            out.push(b'+');
            out.extend_from_slice(&s[e + 1..]);
        }
        _ => out.extend_from_slice(s),
    }
}

/// orjson's int.
pub fn i64(out: &mut Vec<u8>, x: i64) {
    out.extend_from_slice(x.to_string().as_bytes());
}

/// orjson's bool.
pub fn bool(out: &mut Vec<u8>, x: bool) {
    out.extend_from_slice(if x { b"true" } else { b"false" });
}

/// orjson's None.
pub fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"null");
}

/// An optional float: `null` for None.
pub fn opt_f64(out: &mut Vec<u8>, x: Option<f64>) {
    match x {
        Some(v) => f64(out, v),
        None => null(out),
    }
}

/// An optional int: `null` for None.
pub fn opt_i64(out: &mut Vec<u8>, x: Option<i64>) {
    match x {
        Some(v) => i64(out, v),
        None => null(out),
    }
}

/// orjson's str: `"` and `\` escaped, the controls below 0x20 as \b \t \n \f \r or \u00XX
/// (lowercase hex); everything else (0x7f, non-ASCII) as raw UTF-8.
pub fn str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(c >> 4) as usize]);
            out.push(HEX[(c & 15) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A list of floats, as orjson writes a Python list of floats.
pub fn f64_list(out: &mut Vec<u8>, xs: &[f64]) {
    out.push(b'[');
    for (k, &x) in xs.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        f64(out, x);
    }
    out.push(b']');
}

/// A list of ints, as orjson writes a Python list of ints.
pub fn i64_list(out: &mut Vec<u8>, xs: &[i64]) {
    out.push(b'[');
    for (k, &x) in xs.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        i64(out, x);
    }
    out.push(b']');
}

/// Python's `repr(float)`: the shortest digits that round-trip (ryu's), fixed notation for
/// decimal exponents -4 <= e < 16 (`100.0`, `0.0001`), else scientific with a sign and at
/// least two exponent digits (`1e-05`, `1e+16`, `1.5e+300`); `inf`, `-inf`, `nan`.
pub fn py_repr_f64(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let (neg, digits, exp) = shortest_digits(x);
    // the value is 0.d1d2d3... x 10^exp: the decimal point falls after `exp` digits
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    let n = digits.len() as i32;
    if (-3..=16).contains(&exp) {
        if exp <= 0 {
            s.push_str("0.");
            for _ in 0..-exp {
                s.push('0');
            }
            s.push_str(&digits);
        } else if exp >= n {
            s.push_str(&digits);
            for _ in 0..exp - n {
                s.push('0');
            }
            s.push_str(".0");
        } else {
            s.push_str(&digits[..exp as usize]);
            s.push('.');
            s.push_str(&digits[exp as usize..]);
        }
    } else {
        s.push_str(&digits[..1]);
        if n > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let e = exp - 1;
        s.push('e');
        s.push(if e < 0 { '-' } else { '+' });
        s.push_str(&format!("{:02}", e.abs()));
    }
    s
}

/// The sign, the shortest round-trip digits (no leading or trailing zeros; "0" for zero) and
/// the decimal exponent `e` with value = 0.digits x 10^e, taken from ryu's output.
fn shortest_digits(x: f64) -> (bool, String, i32) {
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(x);
    let neg = s.starts_with('-');
    let s = s.trim_start_matches('-');
    let (mantissa, e10) = match s.find('e') {
        Some(p) => (&s[..p], s[p + 1..].parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(p) => (&mantissa[..p], &mantissa[p + 1..]),
        None => (mantissa, ""),
    };
    let all = format!("{int_part}{frac_part}");
    let lead = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_start_matches('0').trim_end_matches('0');
    if digits.is_empty() {
        return (neg, "0".into(), 1);
    }
    let point = int_part.len() as i32 - lead as i32 + e10;
    (neg, digits.to_string(), point)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f64) -> String {
        let mut out = Vec::new();
        f64(&mut out, x);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_as_orjson() {
        assert_eq!(f(1e16), "1e+16");
        assert_eq!(f(1e-7), "1e-7");
        assert_eq!(f(0.00001), "0.00001");
        assert_eq!(f(1e15), "1000000000000000.0");
        assert_eq!(f(5e-324), "5e-324");
        assert_eq!(f(-0.0), "-0.0");
        assert_eq!(f(1.5e300), "1.5e+300");
        assert_eq!(f(f64::NAN), "null");
        assert_eq!(f(0.000012345), "0.000012345");
    }

    #[test]
    fn repr_as_python() {
        assert_eq!(py_repr_f64(1e-5), "1e-05");
        assert_eq!(py_repr_f64(1e16), "1e+16");
        assert_eq!(py_repr_f64(1.5e300), "1.5e+300");
        assert_eq!(py_repr_f64(100.0), "100.0");
        assert_eq!(py_repr_f64(0.0001), "0.0001");
        assert_eq!(py_repr_f64(-0.0), "-0.0");
        assert_eq!(py_repr_f64(1e15), "1000000000000000.0");
        assert_eq!(py_repr_f64(123456789012345680.0), "1.2345678901234568e+17");
        assert_eq!(py_repr_f64(f64::NEG_INFINITY), "-inf");
    }

    #[test]
    fn strings_as_orjson() {
        let mut out = Vec::new();
        str(&mut out, "a\"\\\u{1}\u{8}\u{7f}é");
        assert_eq!(out, "\"a\\\"\\\\\\u0001\\b\u{7f}é\"".as_bytes());
    }
}

/// Python's conversions of a value read back by `orjson.loads` (the `from_list` methods):
/// `int(x)`, `float(x)`, `bool(x)` and `str(x)`. Errors are `"{type}: {message}"`. Strings are
/// converted only in their simple decimal forms, and `str` of a list or dict is refused: a
/// saved state only ever holds what `to_list` wrote.
pub mod py {
    use serde_json::Value;

    /// `int(x)`.
    pub fn int(v: &Value) -> Result<i64, String> {
        match v {
            Value::Bool(b) => Ok(*b as i64),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(i)
                } else if n.is_u64() {
                    Err(format!(
                        "OverflowError: int {n} is beyond the compiled core's range"
                    ))
                } else {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    crate::error::int_of_float(f).map_err(|e| e.reason())
                }
            }
            Value::String(s) => s.trim().parse::<i64>().map_err(|_| {
                format!(
                    "ValueError: invalid literal for int() with base 10: {}",
                    repr_str(s)
                )
            }),
            Value::Null => Err(
                "TypeError: int() argument must be a string, a bytes-like object or a real \
                 number, not 'NoneType'"
                    .into(),
            ),
            Value::Array(_) => Err(
                "TypeError: int() argument must be a string, a bytes-like object or a real \
                 number, not 'list'"
                    .into(),
            ),
            Value::Object(_) => Err(
                "TypeError: int() argument must be a string, a bytes-like object or a real \
                 number, not 'dict'"
                    .into(),
            ),
        }
    }

    /// `float(x)`.
    pub fn float(v: &Value) -> Result<f64, String> {
        match v {
            Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(i as f64)
                } else if let Some(u) = n.as_u64() {
                    Ok(u as f64)
                } else {
                    Ok(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => {
                let t = s.trim();
                let lower = t.to_ascii_lowercase();
                let body = lower.trim_start_matches(['+', '-']);
                let special = matches!(body, "inf" | "infinity" | "nan");
                let plain = !body.is_empty()
                    && body
                        .chars()
                        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-'));
                if special || plain {
                    if let Ok(f) = lower.parse::<f64>() {
                        return Ok(f);
                    }
                }
                Err(format!(
                    "ValueError: could not convert string to float: {}",
                    repr_str(s)
                ))
            }
            Value::Null => Err(
                "TypeError: float() argument must be a string or a real number, not 'NoneType'"
                    .into(),
            ),
            Value::Array(_) => Err(
                "TypeError: float() argument must be a string or a real number, not 'list'".into(),
            ),
            Value::Object(_) => Err(
                "TypeError: float() argument must be a string or a real number, not 'dict'".into(),
            ),
        }
    }

    /// `bool(x)`: Python's truth value.
    pub fn bool(v: &Value) -> bool {
        match v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().map(|f| f != 0.0).unwrap_or(true),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
        }
    }

    /// `str(x)`.
    pub fn str(v: &Value) -> Result<String, String> {
        match v {
            Value::Null => Ok("None".into()),
            Value::Bool(b) => Ok(if *b { "True" } else { "False" }.into()),
            Value::Number(n) => {
                if n.is_i64() || n.is_u64() {
                    Ok(n.to_string())
                } else {
                    Ok(super::py_repr_f64(n.as_f64().unwrap_or(f64::NAN)))
                }
            }
            Value::String(s) => Ok(s.clone()),
            _ => Err(format!("ValueError: a saved string is not a string: {v}")),
        }
    }

    /// Python's repr of a str, for the plain strings of error messages.
    pub fn repr_str(s: &str) -> String {
        if s.contains('\'') && !s.contains('"') {
            format!("\"{s}\"")
        } else {
            format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
        }
    }
}

/// Test helpers for the differential vectors of tests/vectors/gen_vectors.py: floats travel
/// as their bits (or "nan"), exceptions as "E:{type}: {message}".
#[cfg(test)]
pub(crate) mod vectors {
    use serde_json::Value;

    /// The lines of `$ARBCORE_VECTORS/{name}.jsonl`, or None (the test is skipped) when the
    /// variable is not set.
    pub fn lines(name: &str) -> Option<Vec<Value>> {
        let dir = std::env::var("ARBCORE_VECTORS").ok()?;
        let text = std::fs::read_to_string(format!("{dir}/{name}.jsonl")).ok()?;
        Some(
            text.lines()
                .map(|l| serde_json::from_str(l).expect("a vector"))
                .collect(),
        )
    }

    /// A float from its bits or "nan".
    pub fn f(v: &Value) -> f64 {
        match v {
            Value::String(s) if s == "nan" => f64::NAN,
            _ => f64::from_bits(v.as_u64().expect("float bits")),
        }
    }

    /// A float as the vectors write it.
    pub fn enc(x: f64) -> Value {
        if x.is_nan() {
            Value::from("nan")
        } else {
            Value::from(x.to_bits())
        }
    }

    /// An exception as the vectors write it.
    pub fn err(e: &crate::error::Raised) -> Value {
        Value::from(format!("E:{}", e.reason()))
    }

    /// A saved state read back (`from_json`) and written again gives the same bytes, unless
    /// it holds a null (NaN or an infinity), which Python refuses to read back too (float of
    /// None is a TypeError).
    pub fn round_trip(saved: &str, again: impl FnOnce(&Value) -> Result<String, String>) {
        let v: Value = serde_json::from_str(saved).expect("JSON");
        match again(&v) {
            Ok(s) => assert_eq!(s, saved),
            Err(e) => assert!(saved.contains("null"), "{saved}: {e}"),
        }
    }

    /// The bytes a writer gives, as a string.
    pub fn written(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).expect("UTF-8")
    }
}

#[cfg(test)]
mod python_vectors {
    use super::vectors::{f, lines};

    #[test]
    fn floats_and_strings_as_python() {
        let Some(lines) = lines("floats") else { return };
        let mut n = 0;
        for v in &lines {
            if v[0] == "str" {
                let mut out = Vec::new();
                super::str(&mut out, v[1].as_str().unwrap());
                assert_eq!(String::from_utf8(out).unwrap(), v[2].as_str().unwrap());
                continue;
            }
            let x = f(&v[0]);
            let mut out = Vec::new();
            super::f64(&mut out, x);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                v[1].as_str().unwrap(),
                "{x:e}"
            );
            assert_eq!(super::py_repr_f64(x), v[2].as_str().unwrap(), "{x:e}");
            n += 1;
        }
        eprintln!("floats: {n} compared");
    }
}
