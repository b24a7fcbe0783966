//! Provider quality, learned online per (symbol, provider): mirrors
//! agents/arbitration/core/reliability.py line by line (its docstring has the model).

use crate::error::{div, float_lt_int, py_max, py_min, Res};
use crate::json;
use crate::json::py;
use serde_json::Value;

/// `PRIOR_NOISE_VAR`: a newcomer's noise variance (bp²).
pub const PRIOR_NOISE_VAR: f64 = 25.0;
/// `PRIOR_SAMPLES`.
pub const PRIOR_SAMPLES: i64 = 4;
/// `ALPHA`.
pub const ALPHA: f64 = 0.005;
/// `FAST_ALPHA`.
pub const FAST_ALPHA: f64 = 0.1;
/// `CUSUM_K`.
pub const CUSUM_K: f64 = 3.0;
/// `CUSUM_H`.
pub const CUSUM_H: f64 = 30.0;
/// `WINSOR_Z2`.
pub const WINSOR_Z2: f64 = 16.0;
/// `WHITE_ALPHA`.
pub const WHITE_ALPHA: f64 = 0.02;
/// `WHITE_SHARE`.
pub const WHITE_SHARE: f64 = 0.9;
/// `WHITE_FLOOR`.
pub const WHITE_FLOOR: f64 = 0.01;
/// `SILENCE_AFTER_TICKS`.
pub const SILENCE_AFTER_TICKS: i64 = 10;
/// `MIN_SILENCE_MS`.
pub const MIN_SILENCE_MS: i64 = 1_000;
/// `ERROR_SCALE_BPS`.
pub const ERROR_SCALE_BPS: f64 = 10.0;
const TIMING_ALPHA: f64 = 0.05;

/// `ProviderStats`: the learned quality of one provider for one symbol (mutable).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderStats {
    pub total_var: f64,
    pub samples: i64,
    pub fast_var: f64,
    pub cusum: f64,
    pub white_var: f64,
    pub white_samples: i64,
    pub prev_price: f64,
    pub prev_ms: i64,
    pub excluded: bool,
    pub gap_ms: f64,
    pub lag_ms: f64,
    pub last_time_ms: i64,
    pub ticks: i64,
    pub rejections: i64,
    pub last_health_ms: i64,
    pub last_state: String,
    pub info_lag_ms: i64,
}

impl Default for ProviderStats {
    /// `ProviderStats()`.
    fn default() -> Self {
        ProviderStats {
            total_var: PRIOR_NOISE_VAR,
            samples: 0,
            fast_var: PRIOR_NOISE_VAR,
            cusum: 0.0,
            white_var: 0.0,
            white_samples: 0,
            prev_price: 0.0,
            prev_ms: -1,
            excluded: false,
            gap_ms: 0.0,
            lag_ms: 0.0,
            last_time_ms: -1,
            ticks: 0,
            rejections: 0,
            last_health_ms: -1,
            last_state: String::new(),
            info_lag_ms: 0,
        }
    }
}

/// `silent`'s limit: Python keeps it an int or a float, and compares it exactly with an int.
#[derive(Clone, Copy)]
enum Limit {
    Int(i64),
    Float(f64),
}

impl ProviderStats {
    /// `ProviderStats.noise_var`.
    pub fn noise_var(&self) -> f64 {
        let white = WHITE_SHARE * self.white_var;
        if white > self.total_var {
            white
        } else {
            self.total_var
        }
    }

    /// `ProviderStats.white_noise_var`.
    pub fn white_noise_var(&self) -> f64 {
        if self.white_samples == 0 {
            return PRIOR_NOISE_VAR;
        }
        if self.white_var > 0.0 {
            self.white_var
        } else {
            0.0
        }
    }

    /// `ProviderStats.error_bps`. Never raises: the max makes its argument >= 0, -0.0 or NaN.
    pub fn error_bps(&self) -> f64 {
        py_max(self.noise_var(), 0.0).sqrt()
    }

    /// `ProviderStats.on_tick`.
    pub fn on_tick(&mut self, time_ms: i64, newest_ms: i64) {
        let last = self.last_time_ms;
        if last >= 0 && time_ms >= last {
            self.gap_ms += TIMING_ALPHA * ((time_ms - last) as f64 - self.gap_ms);
        }
        let lag = (newest_ms - time_ms).max(0);
        self.lag_ms += TIMING_ALPHA * (lag as f64 - self.lag_ms);
        if time_ms > last {
            self.last_time_ms = time_ms;
        }
        self.ticks += 1;
    }

    /// `ProviderStats.learn`. Raises ZeroDivisionError only for a restored `samples` of -5.
    pub fn learn(&mut self, miss2: f64, explained: f64) -> Res<()> {
        let expected = py_max(self.noise_var(), 0.0) + explained;
        let miss2 = py_min(miss2, WINSOR_Z2 * expected);
        let sample_var = miss2 - explained;
        let alpha = py_max(div(1.0, (self.samples + 1 + PRIOR_SAMPLES) as f64)?, ALPHA);
        self.total_var += alpha * (sample_var - self.total_var);
        self.fast_var += py_max(alpha, FAST_ALPHA) * (sample_var - self.fast_var);
        self.samples += 1;
        let z2 = div(miss2, py_max(expected, 1e-12))?;
        self.cusum = py_max(0.0, self.cusum + z2 - CUSUM_K);
        if self.cusum > CUSUM_H {
            self.cusum = 0.0;
            if self.fast_var > self.total_var {
                self.total_var = self.fast_var;
                self.samples = 0;
            }
        }
        Ok(())
    }

    /// `ProviderStats.learn_white`. Raises ZeroDivisionError only for a restored
    /// `white_samples` of -1.
    pub fn learn_white(&mut self, price: f64, news_ms: i64) -> Res<()> {
        if self.prev_price > 0.0 && news_ms > self.prev_ms {
            let change = (div(price, self.prev_price)? - 1.0) * 1e4;
            let expected = 2.0 * py_max(self.noise_var(), WHITE_FLOOR);
            let change2 = py_min(change * change, WINSOR_Z2 * expected);
            let alpha = py_max(div(1.0, (self.white_samples + 1) as f64)?, WHITE_ALPHA);
            self.white_var += alpha * (change2 / 2.0 - self.white_var);
            self.white_samples += 1;
        }
        self.prev_price = price;
        self.prev_ms = news_ms;
        Ok(())
    }

    /// `ProviderStats.reliability`. Raises ZeroDivisionError only for restored timings that
    /// cancel the 1.0 (a negative gap or lag).
    pub fn reliability(&self, stale_ms: i64) -> Res<f64> {
        let accuracy = div(1.0, 1.0 + self.error_bps() / ERROR_SCALE_BPS)?;
        let promptness = div(
            1.0,
            1.0 + (self.gap_ms + self.lag_ms) / stale_ms.max(1) as f64,
        )?;
        Ok(accuracy * promptness)
    }

    /// `ProviderStats.silent`.
    pub fn silent(&self, now_ms: i64, stale_ms: i64) -> bool {
        if self.last_time_ms < 0 {
            return true;
        }
        let mut limit = Limit::Int(stale_ms);
        if self.ticks >= SILENCE_AFTER_TICKS {
            // max(2 * gap, MIN_SILENCE_MS): `b if b > a else a`, an int against a float
            let twice = 2.0 * self.gap_ms;
            let bigger = if float_lt_int(twice, MIN_SILENCE_MS) {
                Limit::Int(MIN_SILENCE_MS)
            } else {
                Limit::Float(twice)
            };
            // min(stale_ms, bigger): `bigger if bigger < stale_ms else stale_ms`
            limit = match bigger {
                Limit::Int(b) if b < stale_ms => Limit::Int(b),
                Limit::Float(b) if float_lt_int(b, stale_ms) => Limit::Float(b),
                _ => Limit::Int(stale_ms),
            };
        }
        let waited = now_ms - self.last_time_ms;
        match limit {
            Limit::Int(l) => waited > l,
            Limit::Float(l) => crate::error::float_lt_int(l, waited),
        }
    }

    /// `ProviderStats.state`: "down", "degraded" or "up"; `reliability` is
    /// `self.reliability(stale_ms)` when the caller has it.
    pub fn state(&self, now_ms: i64, stale_ms: i64, reliability: Option<f64>) -> Res<&'static str> {
        if self.silent(now_ms, stale_ms) {
            return Ok("down");
        }
        let reliability = match reliability {
            Some(r) => r,
            None => self.reliability(stale_ms)?,
        };
        Ok(if self.excluded || reliability < 0.5 {
            "degraded"
        } else {
            "up"
        })
    }

    /// `orjson.dumps(self.to_list())`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        json::f64(out, self.total_var);
        out.push(b',');
        json::i64(out, self.samples);
        out.push(b',');
        json::f64(out, self.fast_var);
        out.push(b',');
        json::f64(out, self.cusum);
        out.push(b',');
        json::f64(out, self.white_var);
        out.push(b',');
        json::i64(out, self.white_samples);
        out.push(b',');
        json::f64(out, self.prev_price);
        out.push(b',');
        json::i64(out, self.prev_ms);
        out.push(b',');
        json::bool(out, self.excluded);
        out.push(b',');
        json::f64(out, self.gap_ms);
        out.push(b',');
        json::f64(out, self.lag_ms);
        out.push(b',');
        json::i64(out, self.last_time_ms);
        out.push(b',');
        json::i64(out, self.ticks);
        out.push(b',');
        json::i64(out, self.rejections);
        out.push(b',');
        json::i64(out, self.last_health_ms);
        out.push(b',');
        json::str(out, &self.last_state);
        out.push(b',');
        json::i64(out, self.info_lag_ms);
        out.push(b']');
    }

    /// `ProviderStats.from_list`, with its 8-field (before issue 16) and 16-field (before
    /// hidden lags) forms. Errors are `"{type}: {message}"` as Python would raise them.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let data = v.as_array().ok_or_else(|| {
            format!("TypeError: a saved provider's statistics are not a list: {v}")
        })?;
        if data.len() == 8 {
            // _e, g, lag, t, n, r, h, s = data
            return Ok(ProviderStats {
                gap_ms: py::float(&data[1])?,
                lag_ms: py::float(&data[2])?,
                last_time_ms: py::int(&data[3])?,
                ticks: py::int(&data[4])?,
                rejections: py::int(&data[5])?,
                last_health_ms: py::int(&data[6])?,
                last_state: py::str(&data[7])?,
                ..ProviderStats::default()
            });
        }
        if data.len() < 16 {
            return Err(crate::error::unpack_at_least_error(16, data.len()).reason());
        }
        Ok(ProviderStats {
            total_var: py::float(&data[0])?,
            samples: py::int(&data[1])?,
            fast_var: py::float(&data[2])?,
            cusum: py::float(&data[3])?,
            white_var: py::float(&data[4])?,
            white_samples: py::int(&data[5])?,
            prev_price: py::float(&data[6])?,
            prev_ms: py::int(&data[7])?,
            excluded: py::bool(&data[8]),
            gap_ms: py::float(&data[9])?,
            lag_ms: py::float(&data[10])?,
            last_time_ms: py::int(&data[11])?,
            ticks: py::int(&data[12])?,
            rejections: py::int(&data[13])?,
            last_health_ms: py::int(&data[14])?,
            last_state: py::str(&data[15])?,
            info_lag_ms: if data.len() > 16 {
                py::int(&data[16])?
            } else {
                0
            },
        })
    }
}

#[cfg(test)]
mod python_vectors {
    use super::ProviderStats;
    use crate::json::vectors::{enc, err, f, lines, round_trip, written};
    use serde_json::Value;

    /// Random sequences of every method against the Python reference: each result (or
    /// exception) and the saved state after each step.
    #[test]
    fn stats_as_python() {
        let Some(lines) = lines("stats") else { return };
        let mut steps = 0;
        for v in &lines {
            let init: Value = serde_json::from_str(v["init"].as_str().unwrap()).unwrap();
            let mut s = ProviderStats::from_json(&init).unwrap();
            for step in v["ops"].as_array().unwrap() {
                let op = step[0].as_array().unwrap();
                let i = |k: usize| op[k].as_i64().unwrap();
                let got: Value = match op[0].as_str().unwrap() {
                    "on_tick" => {
                        s.on_tick(i(1), i(2));
                        Value::Null
                    }
                    "learn" => s
                        .learn(f(&op[1]), f(&op[2]))
                        .map_or_else(|e| err(&e), |_| Value::Null),
                    "learn_white" => s
                        .learn_white(f(&op[1]), i(2))
                        .map_or_else(|e| err(&e), |_| Value::Null),
                    "reliability" => s.reliability(i(1)).map_or_else(|e| err(&e), enc),
                    "silent" => Value::from(s.silent(i(1), i(2))),
                    "state" => s
                        .state(i(1), i(2), None)
                        .map_or_else(|e| err(&e), Value::from),
                    "values" => Value::from(vec![
                        enc(s.noise_var()),
                        enc(s.white_noise_var()),
                        enc(s.error_bps()),
                    ]),
                    _ => {
                        s.excluded = !s.excluded;
                        Value::Null
                    }
                };
                if op[0] != "values" || !step[1].is_null() {
                    assert_eq!(got, step[1], "{op:?} from {init}");
                }
                assert_eq!(
                    written(|o| s.write_json(o)),
                    step[2].as_str().unwrap(),
                    "{op:?}"
                );
                round_trip(step[2].as_str().unwrap(), |v| {
                    ProviderStats::from_json(v).map(|x| written(|o| x.write_json(o)))
                });
                steps += 1;
            }
        }
        eprintln!("stats: {steps} steps compared");
    }
}
