//! Providers that copy each other, detected from how often they agree almost exactly: mirrors
//! agents/arbitration/core/copies.py.

use crate::error::{div, float_ge_int, py_max, unpack_error, Res};
use crate::json;
use crate::json::py;
use indexmap::IndexMap;
use serde_json::Value;
use std::collections::BTreeSet;

/// `NEAR_SHARE`.
pub const NEAR_SHARE: f64 = 0.05;
/// `COPY_RATE`.
pub const COPY_RATE: f64 = 0.5;
/// `MIN_SAMPLES`.
pub const MIN_SAMPLES: f64 = 20.0;
/// `MAX_PROVIDERS`.
pub const MAX_PROVIDERS: usize = 8;
const ALPHA: f64 = 0.05;

/// The pairs (a, b), a < b, of providers that copy each other (`Agreement.copies`). Python's
/// is a set; only membership, emptiness and `copies_of` are asked of it, so the order here
/// (sorted) changes nothing.
pub type CopySet = BTreeSet<(String, String)>;

/// `Agreement`: per symbol, `pairs["a\x00b"] = [share of near observations, observations,
/// the last event time of b counted]`, in insertion order (a Python dict).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agreement {
    pub pairs: IndexMap<String, [f64; 3]>,
    /// `_copies`: derived from pairs, not saved; None when it must be computed again.
    copies: Option<CopySet>,
}

impl Agreement {
    /// `Agreement(pairs)`.
    pub fn new(pairs: IndexMap<String, [f64; 3]>) -> Self {
        Agreement {
            pairs,
            copies: None,
        }
    }

    /// `Agreement._is_copy`.
    fn is_copy(rate: f64, n: f64) -> bool {
        n >= MIN_SAMPLES && rate > COPY_RATE
    }

    /// `Agreement.observe`: `differences` holds, for each other provider with a fresh quote,
    /// (its name, its quote's event time, the squared difference of the two quotes, the sum of
    /// their white noise variances). Raises ZeroDivisionError only for a restored count of -1 (the
    /// pairs of earlier differences stay updated, as in Python).
    pub fn observe<'a, I>(&mut self, provider: &str, differences: I) -> Res<()>
    where
        I: IntoIterator<Item = (&'a str, i64, f64, f64)>,
    {
        for (other, other_ms, d2, var_sum) in differences {
            let key = format!("{provider}\x00{other}");
            let got = match self.pairs.get_index_of(&key) {
                None => {
                    if self.pairs.len() >= MAX_PROVIDERS * (MAX_PROVIDERS - 1) {
                        continue;
                    }
                    self.pairs.entry(key).or_insert([0.0, 0.0, -1.0])
                }
                Some(i) => {
                    let got = &mut self.pairs[i];
                    if float_ge_int(got[2], other_ms) {
                        continue; // this quote of `other` was counted already
                    }
                    got
                }
            };
            let near = if d2 < NEAR_SHARE * var_sum { 1.0 } else { 0.0 };
            let (rate, n) = (got[0], got[1]);
            let was = Self::is_copy(rate, n);
            let rate = rate + py_max(div(1.0, n + 1.0)?, ALPHA) * (near - rate);
            got[0] = rate;
            let n = n + 1.0;
            got[1] = n;
            got[2] = other_ms as f64;
            if Self::is_copy(rate, n) != was {
                self.copies = None;
            }
        }
        Ok(())
    }

    /// `Agreement.copies`: recomputed only when a pair changed side. Raises ValueError for a
    /// key without exactly one "\x00" (a provider name holding one).
    pub fn copies(&mut self) -> Res<&CopySet> {
        if self.copies.is_none() {
            let mut out = CopySet::new();
            for (key, got) in &self.pairs {
                if Self::is_copy(got[0], got[1]) {
                    let parts: Vec<&str> = key.split('\x00').collect();
                    if parts.len() != 2 {
                        return Err(unpack_error(2, parts.len()));
                    }
                    let (a, b) = (parts[0].to_string(), parts[1].to_string());
                    out.insert(if a < b { (a, b) } else { (b, a) });
                }
            }
            self.copies = Some(out);
        }
        Ok(self.copies.as_ref().expect("computed above"))
    }

    /// `orjson.dumps(self.to_list())`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        for (k, (key, got)) in self.pairs.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.push(b'[');
            json::str(out, key);
            for x in got {
                out.push(b',');
                json::f64(out, *x);
            }
            out.push(b']');
        }
        out.push(b']');
    }

    /// `Agreement.from_list`, also of pairs saved without the last time counted. Errors are
    /// `"{type}: {message}"`.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let data = v
            .as_array()
            .ok_or_else(|| format!("TypeError: a saved agreement is not a list: {v}"))?;
        let mut pairs = IndexMap::new();
        for item in data {
            let item = item
                .as_array()
                .ok_or_else(|| format!("TypeError: a saved pair is not a list: {item}"))?;
            if item.len() < 3 {
                return Err(crate::error::unpack_at_least_error(3, item.len()).reason());
            }
            let key = py::str(&item[0])?;
            let rate = py::float(&item[1])?;
            let n = py::float(&item[2])?;
            let last = if item.len() > 3 {
                py::float(&item[3])?
            } else {
                -1.0
            };
            pairs.insert(key, [rate, n, last]);
        }
        Ok(Agreement::new(pairs))
    }
}

/// `copies_of`: the providers that `pairs` say copy `provider`.
pub fn copies_of<'a>(provider: &str, pairs: &'a CopySet) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    for (a, b) in pairs {
        if a == provider {
            out.insert(b.as_str());
        }
        if b == provider {
            out.insert(a.as_str());
        }
    }
    out
}

#[cfg(test)]
mod python_vectors {
    use super::{copies_of, Agreement, CopySet};
    use crate::json::vectors::{err, f, lines, round_trip, written};
    use serde_json::Value;

    #[test]
    fn agreement_as_python() {
        let Some(lines) = lines("copies") else { return };
        let (mut steps, mut of) = (0, 0);
        for v in &lines {
            if let Some(c) = v.get("copies_of") {
                let pairs: CopySet = c[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
                    .collect();
                let got: Vec<&str> = copies_of(c[0].as_str().unwrap(), &pairs)
                    .into_iter()
                    .collect();
                assert_eq!(Value::from(got), c[2]);
                of += 1;
                continue;
            }
            let init: Value = serde_json::from_str(v["init"].as_str().unwrap()).unwrap();
            let mut a = Agreement::from_json(&init).unwrap();
            for step in v["ops"].as_array().unwrap() {
                let me = step[0][0].as_str().unwrap();
                let diffs: Vec<(&str, i64, f64, f64)> = step[0][1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| {
                        (
                            d[0].as_str().unwrap(),
                            d[1].as_i64().unwrap(),
                            f(&d[2]),
                            f(&d[3]),
                        )
                    })
                    .collect();
                let got = a
                    .observe(me, diffs)
                    .map_or_else(|e| err(&e), |_| Value::Null);
                assert_eq!(got, step[1]);
                let cp = match a.copies() {
                    Ok(c) => Value::from(
                        c.iter()
                            .map(|(x, y)| Value::from(vec![x.as_str(), y.as_str()]))
                            .collect::<Vec<_>>(),
                    ),
                    Err(e) => err(&e),
                };
                assert_eq!(cp, step[2]);
                assert_eq!(written(|o| a.write_json(o)), step[3].as_str().unwrap());
                round_trip(step[3].as_str().unwrap(), |v| {
                    Agreement::from_json(v).map(|x| written(|o| x.write_json(o)))
                });
                steps += 1;
            }
        }
        eprintln!("copies: {steps} steps and {of} copies_of compared");
    }
}
