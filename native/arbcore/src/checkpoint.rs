//! `agents/arbitration/core/checkpoint.py`: a partition's mark, version 3 (a JSON object);
//! version 2 (a positional list) is still read.

use serde_json::Value;

use crate::error::{Raised, Res};
use crate::json;

pub const CHECKPOINT_VERSION: i64 = 3;
const POSITIONAL_VERSION: i64 = 2;

/// `Checkpoint.to_bytes`: the states are spliced in as they are (orjson.Fragment).
pub fn to_bytes<'a>(
    applied: i64,
    watermark: i64,
    states: impl Iterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(8192);
    out.extend_from_slice(b"{\"v\":3,\"applied\":");
    json::i64(&mut out, applied);
    out.extend_from_slice(b",\"watermark\":");
    json::i64(&mut out, watermark);
    out.extend_from_slice(b",\"states\":[");
    for (k, s) in states.enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(s);
    }
    out.extend_from_slice(b"]}");
    out
}

/// A checkpoint read back: the states still as JSON values (`SymbolState::from_value`).
pub struct Checkpoint {
    pub applied: i64,
    pub watermark: i64,
    pub states: Vec<Value>,
}

/// `version == n` as Python compares a JSON number with an int (3.0 == 3).
fn is_version(v: Option<&Value>, n: i64) -> bool {
    match v {
        Some(Value::Number(x)) => x.as_i64() == Some(n) || x.as_f64() == Some(n as f64),
        _ => false,
    }
}

/// `Checkpoint.from_bytes`. The errors' messages are Python's where this build can know them
/// (a wrong version, a non-integer offset); for the others (a JSON syntax error, a missing key)
/// the Python wrapper asks the reference for its exact exception.
pub fn from_bytes(data: &[u8]) -> Res<Checkpoint> {
    let saved: Value =
        serde_json::from_slice(data).map_err(|e| Raised::new("JSONDecodeError", e.to_string()))?;
    let missing = |k: &str| Raised::new("KeyError", format!("'{k}'"));
    let (applied, watermark, states) = match &saved {
        Value::Object(o) if is_version(o.get("v"), CHECKPOINT_VERSION) => (
            o.get("applied").ok_or_else(|| missing("applied"))?,
            o.get("watermark").ok_or_else(|| missing("watermark"))?,
            o.get("states").ok_or_else(|| missing("states"))?,
        ),
        Value::Array(a) if !a.is_empty() && is_version(a.first(), POSITIONAL_VERSION) => {
            if a.len() != 4 {
                return Err(crate::error::unpack_error(4, a.len()));
            }
            (&a[1], &a[2], &a[3])
        }
        _ => {
            let version = match &saved {
                Value::Object(o) => o.get("v").cloned().unwrap_or(Value::Null),
                Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
                _ => Value::Null,
            };
            return Err(Raised::new(
                "ValueError",
                format!(
                    "a checkpoint of version {}, expected {CHECKPOINT_VERSION}",
                    py_repr(&version)
                ),
            ));
        }
    };
    let whole = |v: &Value| v.as_i64();
    let (Some(applied), Some(watermark)) = (whole(applied), whole(watermark)) else {
        return Err(Raised::new(
            "ValueError",
            "a checkpoint's applied offset and watermark are whole numbers",
        ));
    };
    let states = states
        .as_array()
        .ok_or_else(|| Raised::new("TypeError", "the checkpoint's states are not a list"))?
        .clone();
    Ok(Checkpoint {
        applied,
        watermark,
        states,
    })
}

/// Python's repr of a few JSON values (the version in an error message); others are left to
/// the Python wrapper, which asks the reference.
fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => json::py_repr_f64(n.as_f64().unwrap_or(f64::NAN)),
        },
        other => other.to_string(),
    }
}
