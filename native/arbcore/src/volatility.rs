//! How fast a symbol's true price wanders (bp² per ms): mirrors
//! agents/arbitration/core/volatility.py.

use crate::error::{div, py_max, py_min, unpack_error, Res};
use crate::json;
use crate::json::py;
use crate::reliability::WINSOR_Z2;
use serde_json::Value;

/// `PRIOR_DRIFT`.
pub const PRIOR_DRIFT: f64 = 0.001;
/// `WINDOW_MS`.
pub const WINDOW_MS: i64 = 10_000;
const PRIOR_SAMPLES: i64 = 2;
const ALPHA: f64 = 0.1;
const FLOOR: f64 = 0.01;

/// `Volatility`: the learned drift of one symbol (mutable).
#[derive(Debug, Clone, PartialEq)]
pub struct Volatility {
    pub drift: f64,
    pub samples: i64,
    pub anchor_ms: i64,
    pub anchor_price: f64,
    pub anchor_var: f64,
}

impl Default for Volatility {
    /// `Volatility()`.
    fn default() -> Self {
        Volatility {
            drift: PRIOR_DRIFT,
            samples: 0,
            anchor_ms: -1,
            anchor_price: 0.0,
            anchor_var: 0.0,
        }
    }
}

impl Volatility {
    /// `Volatility.per_ms`.
    pub fn per_ms(&self) -> f64 {
        if self.drift > 0.0 {
            self.drift
        } else {
            0.0
        }
    }

    /// `Volatility.observe`. Raises ZeroDivisionError for an anchor price of 0 (only a
    /// restored one) or a restored `samples` of -3.
    pub fn observe(&mut self, now_ms: i64, price: f64, variance_bps2: f64) -> Res<()> {
        // Python ints: a restored anchor of any size cannot overflow
        let elapsed = now_ms as i128 - self.anchor_ms as i128;
        if self.anchor_ms >= 0 && elapsed < WINDOW_MS as i128 {
            return Ok(());
        }
        if self.anchor_ms >= 0 {
            let move_bps = (div(price, self.anchor_price)? - 1.0) * 1e4;
            let explained = variance_bps2 + self.anchor_var;
            let expected = py_max(self.per_ms() * elapsed as f64 + explained, FLOOR);
            let move2 = py_min(move_bps * move_bps, WINSOR_Z2 * expected);
            let sample = div(move2 - explained, elapsed as f64)?;
            let alpha = py_max(div(1.0, (self.samples + 1 + PRIOR_SAMPLES) as f64)?, ALPHA);
            self.drift += alpha * (sample - self.drift);
            self.samples += 1;
        }
        self.anchor_ms = now_ms;
        self.anchor_price = price;
        self.anchor_var = variance_bps2;
        Ok(())
    }

    /// `orjson.dumps(self.to_list())`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        json::f64(out, self.drift);
        out.push(b',');
        json::i64(out, self.samples);
        out.push(b',');
        json::i64(out, self.anchor_ms);
        out.push(b',');
        json::f64(out, self.anchor_price);
        out.push(b',');
        json::f64(out, self.anchor_var);
        out.push(b']');
    }

    /// `Volatility.from_list`. Errors are `"{type}: {message}"`.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let data = v
            .as_array()
            .ok_or_else(|| format!("TypeError: a saved volatility is not a list: {v}"))?;
        if data.len() != 5 {
            return Err(unpack_error(5, data.len()).reason());
        }
        Ok(Volatility {
            drift: py::float(&data[0])?,
            samples: py::int(&data[1])?,
            anchor_ms: py::int(&data[2])?,
            anchor_price: py::float(&data[3])?,
            anchor_var: py::float(&data[4])?,
        })
    }
}

#[cfg(test)]
mod python_vectors {
    use super::Volatility;
    use crate::json::vectors::{enc, err, f, lines, round_trip, written};
    use serde_json::Value;

    #[test]
    fn volatility_as_python() {
        let Some(lines) = lines("volatility") else {
            return;
        };
        let mut steps = 0;
        for v in &lines {
            let init: Value = serde_json::from_str(v["init"].as_str().unwrap()).unwrap();
            let mut vol = Volatility::from_json(&init).unwrap();
            for step in v["ops"].as_array().unwrap() {
                let a = &step[0];
                let got = vol
                    .observe(a[0].as_i64().unwrap(), f(&a[1]), f(&a[2]))
                    .map_or_else(|e| err(&e), |_| Value::Null);
                assert_eq!(got, step[1], "{a}");
                assert_eq!(enc(vol.per_ms()), step[2]);
                assert_eq!(
                    written(|o| vol.write_json(o)),
                    step[3].as_str().unwrap(),
                    "{a}"
                );
                round_trip(step[3].as_str().unwrap(), |v| {
                    Volatility::from_json(v).map(|x| written(|o| x.write_json(o)))
                });
                steps += 1;
            }
        }
        eprintln!("volatility: {steps} steps compared");
    }
}
