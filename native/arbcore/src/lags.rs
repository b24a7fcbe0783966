//! Hidden lags, learned online: mirrors agents/arbitration/core/lags.py (its docstring has the
//! method).

use crate::error::{div, float_ge_int, float_le_int, float_lt_int, py_max, py_min, Res};
use crate::json;
use crate::json::py;
use serde_json::Value;
use std::sync::OnceLock;

/// `CANDIDATES_MS`: 0, 500, ..., 6000.
pub const CANDIDATES_MS: [i64; 13] = [
    0, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000, 5500, 6000,
];
/// `MAX_LAG_MS`.
pub const MAX_LAG_MS: i64 = 6_000;
/// `REFERENCE_EVERY_MS`.
pub const REFERENCE_EVERY_MS: i64 = 250;
/// `ALPHA`.
pub const ALPHA: f64 = 0.002;
/// `MIN_SAMPLES`.
pub const MIN_SAMPLES: i64 = 40;
/// `FIT_EVERY`.
pub const FIT_EVERY: i64 = 8;
/// `FIT_STEP_MS`.
pub const FIT_STEP_MS: i64 = 100;
/// `SIGNIFICANT`.
pub const SIGNIFICANT: f64 = 0.25;
/// `MAX_MISS_BPS`.
pub const MAX_MISS_BPS: f64 = 1e4;

const N_CENTRES: usize = (MAX_LAG_MS / FIT_STEP_MS + 1) as usize;

/// `_CENTRES`, `_SHAPES` and `_SQUARES`, computed as Python computes them at import.
struct Shapes {
    centres: [i64; N_CENTRES],
    shapes: [[f64; 13]; N_CENTRES],
    squares: [f64; N_CENTRES],
}

fn shapes() -> &'static Shapes {
    static SHAPES: OnceLock<Shapes> = OnceLock::new();
    SHAPES.get_or_init(|| {
        let mut s = Shapes {
            centres: [0; N_CENTRES],
            shapes: [[0.0; 13]; N_CENTRES],
            squares: [0.0; N_CENTRES],
        };
        for (j, c) in (0..=MAX_LAG_MS).step_by(FIT_STEP_MS as usize).enumerate() {
            s.centres[j] = c;
            // sum(...) of ints is exact; int / int is correctly rounded, as IEEE division of
            // two exactly representable ints
            let total: i64 = CANDIDATES_MS.iter().map(|x| (x - c).abs()).sum();
            let mean = total as f64 / CANDIDATES_MS.len() as f64;
            for (k, lag) in CANDIDATES_MS.iter().enumerate() {
                s.shapes[j][k] = (lag - c).abs() as f64 - mean;
            }
            let mut squares = 0.0;
            for x in s.shapes[j] {
                squares += x * x;
            }
            s.squares[j] = squares;
        }
        s
    })
}

/// `LagLearner`: the learned lag of one provider for one symbol (mutable).
#[derive(Debug, Clone, PartialEq)]
pub struct LagLearner {
    pub own_times: Vec<i64>,
    pub own_prices: Vec<f64>,
    pub ref_times: Vec<f64>,
    pub ref_prices: Vec<f64>,
    pub fits: Vec<f64>,
    pub samples: i64,
}

impl Default for LagLearner {
    /// `LagLearner()`.
    fn default() -> Self {
        LagLearner {
            own_times: Vec::new(),
            own_prices: Vec::new(),
            ref_times: Vec::new(),
            ref_prices: Vec::new(),
            fits: vec![0.0; CANDIDATES_MS.len()],
            samples: 0,
        }
    }
}

impl LagLearner {
    /// `LagLearner.observe`: the newly fitted lag (ms) when there is one. Raises
    /// ZeroDivisionError from `_compare` only (a reference price of 0, equal restored times or
    /// a restored `samples` of -1), leaving what Python leaves.
    pub fn observe(
        &mut self,
        time_ms: i64,
        price: f64,
        others_price: f64,
        others_ms: f64,
        drift: f64,
    ) -> Res<Option<i64>> {
        if let Some(&last) = self.own_times.last() {
            // Python ints: a restored time of any size cannot overflow
            if time_ms as i128 - last as i128 > MAX_LAG_MS as i128 {
                // back from silence: the histories start again (the fits stay)
                self.own_times.clear();
                self.own_prices.clear();
                self.ref_times.clear();
                self.ref_prices.clear();
            }
        }
        if self.own_times.last().is_none_or(|&last| time_ms > last) {
            self.own_times.push(time_ms);
            self.own_prices.push(price);
        }
        // float + int, then >= between floats
        if self
            .ref_times
            .last()
            .is_none_or(|&last| others_ms >= last + REFERENCE_EVERY_MS as f64)
        {
            self.ref_times.push(others_ms);
            self.ref_prices.push(others_price);
        }
        let mut compared = false;
        // every reference whose whole V is now known: a float compared exactly with an int
        while !self.ref_times.is_empty()
            && float_le_int(self.ref_times[0] + MAX_LAG_MS as f64, time_ms)
        {
            let at = self.ref_times.remove(0);
            let reference = self.ref_prices.remove(0);
            if float_ge_int(at, self.own_times[0]) {
                self.compare(at, reference)?;
                compared = true;
            }
        }
        if let Some(&oldest) = self.ref_times.first() {
            let cut = bisect_right(&self.own_times, oldest) as i64 - 1;
            if cut > 0 {
                self.own_times.drain(..cut as usize);
                self.own_prices.drain(..cut as usize);
            }
        }
        if compared && self.samples >= MIN_SAMPLES && self.samples.rem_euclid(FIT_EVERY) == 0 {
            return Ok(Some(fit_lag(&self.fits, drift)));
        }
        Ok(None)
    }

    /// `LagLearner._compare`.
    fn compare(&mut self, at: f64, reference: f64) -> Res<()> {
        let alpha = py_max(div(1.0, (self.samples + 1) as f64)?, ALPHA);
        let (times, prices, fits) = (&self.own_times, &self.own_prices, &mut self.fits);
        let last = times.len() - 1;
        let mut i = 0;
        for (k, lag) in CANDIDATES_MS.iter().enumerate() {
            let t = at + *lag as f64;
            while i < last && float_ge_int(t, times[i + 1]) {
                i += 1;
            }
            let quoted = if i == last {
                prices[last]
            } else {
                let t0 = times[i];
                // (p1 - p0) * (t - t0) / (t1 - t0), left to right; t1 - t0 is an int
                prices[i]
                    + div(
                        (prices[i + 1] - prices[i]) * (t - t0 as f64),
                        (times[i + 1] as i128 - t0 as i128) as f64,
                    )?
            };
            let miss = py_min((div(quoted, reference)? - 1.0).abs() * 1e4, MAX_MISS_BPS);
            fits[k] += alpha * (miss * miss - fits[k]);
        }
        self.samples += 1;
        Ok(())
    }

    /// `orjson.dumps(self.to_list())`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        json::i64_list(out, &self.own_times);
        out.push(b',');
        json::f64_list(out, &self.own_prices);
        out.push(b',');
        json::f64_list(out, &self.ref_times);
        out.push(b',');
        json::f64_list(out, &self.ref_prices);
        out.push(b',');
        json::f64_list(out, &self.fits);
        out.push(b',');
        json::i64(out, self.samples);
        out.push(b']');
    }

    /// `LagLearner.from_list`. Errors are `"{type}: {message}"`.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let data = v
            .as_array()
            .ok_or_else(|| format!("TypeError: a saved lag learner is not a list: {v}"))?;
        if data.len() != 6 {
            return Err(crate::error::unpack_error(6, data.len()).reason());
        }
        let fits = match data[4].as_array() {
            Some(f) if f.len() == CANDIDATES_MS.len() => f,
            _ => {
                return Err(format!(
                    "ValueError: a saved lag fit is not {} numbers: {}",
                    CANDIDATES_MS.len(),
                    data[4]
                ))
            }
        };
        let numbers = |x: &'_ Value| -> Result<Vec<Value>, String> {
            x.as_array()
                .cloned()
                .ok_or_else(|| format!("ValueError: a saved lag history is not a list: {x}"))
        };
        let own_times = numbers(&data[0])?
            .iter()
            .map(py::int)
            .collect::<Result<_, _>>()?;
        let own_prices = numbers(&data[1])?
            .iter()
            .map(py::float)
            .collect::<Result<_, _>>()?;
        let ref_times = numbers(&data[2])?
            .iter()
            .map(py::float)
            .collect::<Result<_, _>>()?;
        let ref_prices = numbers(&data[3])?
            .iter()
            .map(py::float)
            .collect::<Result<_, _>>()?;
        let fits = fits.iter().map(py::float).collect::<Result<_, _>>()?;
        // int(n) if isinstance(n, int) else 0: a bool is an int in Python
        let samples = match &data[5] {
            Value::Bool(b) => *b as i64,
            Value::Number(n) if n.is_i64() => n.as_i64().unwrap_or(0),
            Value::Number(n) if n.is_u64() => {
                return Err(format!(
                    "OverflowError: int {n} is beyond the compiled core's range"
                ))
            }
            _ => 0,
        };
        Ok(LagLearner {
            own_times,
            own_prices,
            ref_times,
            ref_prices,
            fits,
            samples,
        })
    }
}

/// `bisect.bisect_right(times, x)` with Python's algorithm (`x < a[mid]`, a float against an
/// int, exactly), so that even unsorted restored times give Python's answer.
fn bisect_right(times: &[i64], x: f64) -> usize {
    let (mut lo, mut hi) = (0, times.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if float_lt_int(x, times[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// `fit_lag`: the lag (ms, a multiple of FIT_STEP_MS) whose V fits `fits` best, or 0 when the
/// curve does not drop enough. `fits` holds 13 numbers (from_json checks it).
pub fn fit_lag(fits: &[f64], drift: f64) -> i64 {
    let s = shapes();
    let (mut best, mut best_cost) = (0i64, f64::INFINITY);
    for j in 0..N_CENTRES {
        // sum(map(operator.mul, fits, shape)): from the int 0, left to right
        let mut dot = 0.0;
        for (f, x) in fits.iter().zip(s.shapes[j].iter()) {
            dot += f * x;
        }
        let cost = drift * s.squares[j] - 2.0 * dot;
        if cost < best_cost {
            best = s.centres[j];
            best_cost = cost;
        }
    }
    if best == 0 {
        return 0;
    }
    let step = CANDIDATES_MS[1];
    let (k, rest) = ((best / step) as usize, best % step);
    let at_best = if rest == 0 {
        fits[k]
    } else {
        fits[k] + (fits[k + 1] - fits[k]) * rest as f64 / step as f64
    };
    if fits[0] - at_best >= SIGNIFICANT * drift * best as f64 {
        best
    } else {
        0
    }
}

#[cfg(test)]
mod python_vectors {
    use super::{fit_lag, LagLearner};
    use crate::json::vectors::{err, f, lines, round_trip, written};
    use serde_json::Value;

    #[test]
    fn lags_as_python() {
        let Some(lines) = lines("lags") else { return };
        let (mut steps, mut fits, mut lags) = (0, 0, 0);
        for v in &lines {
            if let Some(c) = v.get("fit") {
                let fs: Vec<f64> = c[0].as_array().unwrap().iter().map(f).collect();
                assert_eq!(Value::from(fit_lag(&fs, f(&c[1]))), c[2], "{c}");
                fits += 1;
                continue;
            }
            let init: Value = serde_json::from_str(v["init"].as_str().unwrap()).unwrap();
            let mut lr = LagLearner::from_json(&init).unwrap();
            for step in v["ops"].as_array().unwrap() {
                let a = &step[0];
                let got = lr
                    .observe(
                        a[0].as_i64().unwrap(),
                        f(&a[1]),
                        f(&a[2]),
                        f(&a[3]),
                        f(&a[4]),
                    )
                    .map_or_else(|e| err(&e), Value::from);
                assert_eq!(got, step[1], "{a}");
                if got.is_i64() {
                    lags += 1;
                }
                assert_eq!(
                    written(|o| lr.write_json(o)),
                    step[2].as_str().unwrap(),
                    "{a}"
                );
                round_trip(step[2].as_str().unwrap(), |v| {
                    LagLearner::from_json(v).map(|x| written(|o| x.write_json(o)))
                });
                steps += 1;
            }
        }
        eprintln!("lags: {steps} steps ({lags} fitted lags) and {fits} fit_lag compared");
    }
}
