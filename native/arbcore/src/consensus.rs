//! Consensus: the latest quote of each provider for one symbol -> one price with a band and a
//! confidence. Mirrors agents/arbitration/core/consensus.py line by line (its docstring has
//! the model); every float operation is Python's, in Python's order.

use crate::copies::{copies_of, CopySet};
use crate::error::{div, erf, pow, py_max, py_min, sqrt, Res};
use crate::reliability::{ProviderStats, PRIOR_NOISE_VAR};
use indexmap::IndexMap;
use std::collections::BTreeSet;

/// `QualityFlag.WIDE_SPREAD.value`.
pub const WIDE_SPREAD: &str = "wide_spread";
const STALE: &str = "stale";
const OUTLIERS: &str = "outliers_rejected";
const SINGLE: &str = "single_source";
const LOW: &str = "low_confidence";

/// `Z_90`: z of a two-sided 90 % normal interval.
pub const Z_90: f64 = 1.6448536269514722;

/// `Quote`: the latest observation of one provider for a symbol.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub provider: String,
    pub price: f64,
    pub time_ms: i64,
    pub bid: Option<f64>,
    pub ask: Option<f64>,
    /// the event time since which its price has not changed (None: `time_ms`)
    pub since_ms: Option<i64>,
}

impl Quote {
    /// `Quote.news_ms`.
    pub fn news_ms(&self) -> i64 {
        self.since_ms.unwrap_or(self.time_ms)
    }
}

/// `ConsensusParams`; `Default` is Python's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsensusParams {
    pub stale_ms: i64,
    pub exclude_bps: f64,
    pub exclude_sigmas: f64,
    pub readmit_bps: f64,
    pub readmit_sigmas: f64,
    pub min_noise_bps: f64,
    pub hit_bps: f64,
    pub band_z: f64,
    pub low_confidence: f64,
    pub wide_spread_bps: f64,
}

impl Default for ConsensusParams {
    fn default() -> Self {
        ConsensusParams {
            stale_ms: 10_000,
            exclude_bps: 25.0,
            exclude_sigmas: 6.0,
            readmit_bps: 12.5,
            readmit_sigmas: 3.0,
            min_noise_bps: 0.1,
            hit_bps: 2.0,
            band_z: Z_90,
            low_confidence: 0.3,
            wide_spread_bps: 50.0,
        }
    }
}

impl ConsensusParams {
    /// `ConsensusParams(stale_ms=stale_ms)`.
    pub fn with_stale_ms(stale_ms: i64) -> Self {
        ConsensusParams {
            stale_ms,
            ..ConsensusParams::default()
        }
    }
}

/// `Others`: what the inliers other than some providers say (`ConsensusResult.without`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Others {
    pub price: f64,
    pub error_var: f64,
    pub stated_ms: f64,
}

/// `ConsensusResult`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsensusResult {
    pub price: f64,
    pub band_low: f64,
    pub band_high: f64,
    pub confidence: f64,
    /// sorted by provider
    pub used: Vec<String>,
    /// excluded fresh providers, sorted
    pub rejected: Vec<String>,
    /// sorted
    pub flags: Vec<&'static str>,
    pub variance_bps2: f64,
    pub quotes: Vec<Quote>,
    pub weights: Vec<f64>,
    pub noises: Vec<f64>,
    /// Python ints: i128 holds every difference of the i64 times and lags exactly, so a
    /// restored lag of any size gives Python's floats, never an overflow
    pub infos: Vec<i128>,
    pub drift: f64,
    pub now_ms: i64,
}

impl ConsensusResult {
    /// `ConsensusResult.without`: the estimate from the inliers not in `leave_out`, with the
    /// variance of its error against the truth at `at_ms`; None if no inlier is left out or
    /// none remains. Raises only where `_combine` does.
    pub fn without<S: AsRef<str>>(
        &self,
        leave_out: &[S],
        at_ms: impl Into<i128>,
    ) -> Res<Option<Others>> {
        // `at_ms` is a Python int: news_ms less a restored lag may leave i64
        let at_ms: i128 = at_ms.into();
        let out = |p: &str| leave_out.iter().any(|x| x.as_ref() == p);
        let keep: Vec<usize> = (0..self.quotes.len())
            .filter(|&i| !out(&self.quotes[i].provider))
            .collect();
        if keep.is_empty() || keep.len() == self.quotes.len() {
            return Ok(None);
        }
        let infos: Vec<i128> = keep.iter().map(|&i| self.infos[i]).collect();
        let noises: Vec<f64> = keep.iter().map(|&i| self.noises[i]).collect();
        let prices: Vec<f64> = keep.iter().map(|&i| self.quotes[i].price).collect();
        let (price, _, weights) = combine(&prices, &noises, &infos, self.drift, self.now_ms)?;
        // sum(...) from the int 0: the same as from 0.0, added left to right
        let mut stated = 0.0;
        for (w, &i) in weights.iter().zip(keep.iter()) {
            stated += w * self.quotes[i].news_ms() as f64;
        }
        let error_var = error_var(&weights, &noises, &infos, self.drift, at_ms);
        Ok(Some(Others {
            price,
            error_var,
            stated_ms: stated,
        }))
    }
}

/// `consensus`: the consensus of `quotes` at event time `now_ms`; None if there are no
/// quotes. Python's docstring says it raises nothing, but its arithmetic does on extreme
/// inputs, and this raises at the same points: `min_noise_bps ** 2` (OverflowError), a
/// median of 0 (ZeroDivisionError: prices so small that their halves round to 0),
/// `math.sqrt` of a negative scatter or variance (ValueError: a drift times a negative age,
/// from an information time after `now_ms`), `hit_bps / (sd * sqrt(2))` with a zero sd and
/// `_combine`'s gain with a zero denominator (ZeroDivisionError).
pub fn consensus(
    quotes: &[Quote],
    now_ms: i64,
    stats: &IndexMap<String, ProviderStats>,
    drift: f64,
    params: &ConsensusParams,
    copies: &CopySet,
) -> Res<Option<ConsensusResult>> {
    if quotes.is_empty() {
        return Ok(None);
    }
    let mut flags: Vec<&'static str> = Vec::new();
    // sorted by provider (a stable sort, as Python's)
    let mut fresh: Vec<&Quote> = quotes
        .iter()
        .filter(|q| now_ms - q.time_ms <= params.stale_ms)
        .collect();
    fresh.sort_by(|a, b| a.provider.cmp(&b.provider));
    if fresh.is_empty() {
        fresh.push(freshest(quotes));
        flags.push(STALE);
    }
    let floor = pow(params.min_noise_bps, 2.0)?;
    let mut noises = Vec::with_capacity(fresh.len());
    let mut infos = Vec::with_capacity(fresh.len());
    let mut scatter = Vec::with_capacity(fresh.len());
    for q in &fresh {
        let s = stats.get(&q.provider);
        let noise = s.map_or(PRIOR_NOISE_VAR, |s| s.noise_var());
        let white = s.map_or(PRIOR_NOISE_VAR, |s| s.white_noise_var());
        let info = match s {
            Some(s) => q.news_ms() as i128 - s.info_lag_ms as i128,
            None => q.news_ms() as i128,
        };
        noises.push(py_max(noise, floor));
        infos.push(info);
        scatter.push(py_max(white, floor) + drift * (now_ms as i128 - info) as f64);
    }

    let names: Vec<&str> = fresh.iter().map(|q| q.provider.as_str()).collect();
    let votes = votes(&names, copies);
    let keep = exclusion(&fresh, &scatter, &votes, stats, params)?;
    let inliers: Vec<&Quote> = keep.iter().map(|&i| fresh[i]).collect();
    let inlier_votes = if !copies.is_empty() && keep.len() < fresh.len() {
        // copies that were excluded no longer share a vote
        let names: Vec<&str> = inliers.iter().map(|q| q.provider.as_str()).collect();
        self::votes(&names, copies)
    } else {
        keep.iter().map(|&i| votes[i]).collect()
    };
    let mut shares = Vec::with_capacity(keep.len());
    for (&i, &v) in keep.iter().zip(inlier_votes.iter()) {
        shares.push(div(noises[i], v)?);
    }
    let times: Vec<i128> = keep.iter().map(|&i| infos[i]).collect();
    let mut rejected: Vec<String> = (0..fresh.len())
        .filter(|i| !keep.contains(i))
        .map(|i| fresh[i].provider.clone())
        .collect();
    rejected.sort();
    if !rejected.is_empty() {
        flags.push(OUTLIERS);
    }
    if inliers.len() == 1 {
        flags.push(SINGLE);
    }
    let prices: Vec<f64> = inliers.iter().map(|q| q.price).collect();
    let (price, variance, weights) = combine(&prices, &shares, &times, drift, now_ms)?;
    let sd_bps = sqrt(variance)?;
    let confidence = erf(div(params.hit_bps, sd_bps * sqrt(2.0)?)?);
    if confidence < params.low_confidence {
        flags.push(LOW);
    }
    let half_bps = params.band_z * sd_bps;
    if half_bps > params.wide_spread_bps {
        flags.push(WIDE_SPREAD);
    }
    let half = price * half_bps / 1e4;
    let band_low = py_max(price - half, price * 1e-6); // a price is > 0
    let band_high = py_max(price + half, price);
    flags.sort();
    Ok(Some(ConsensusResult {
        price,
        band_low: py_min(band_low, price),
        band_high,
        confidence,
        used: inliers.iter().map(|q| q.provider.clone()).collect(),
        rejected,
        flags,
        variance_bps2: variance,
        quotes: inliers.iter().map(|&q| q.clone()).collect(),
        weights,
        noises: shares,
        infos: times,
        drift,
        now_ms,
    }))
}

/// `max(quotes, key=_by_time_provider)`: the first of the largest (time, provider).
fn freshest(quotes: &[Quote]) -> &Quote {
    let mut best = &quotes[0];
    for q in &quotes[1..] {
        if (q.time_ms, &q.provider) > (best.time_ms, &best.provider) {
            best = q;
        }
    }
    best
}

/// `_votes`: each provider's share of a vote, 1 / (1 + the number of its copies among
/// `names`).
fn votes(names: &[&str], copies: &CopySet) -> Vec<f64> {
    if copies.is_empty() {
        return vec![1.0; names.len()];
    }
    let present: BTreeSet<&str> = names.iter().copied().collect();
    names
        .iter()
        .map(|a| {
            let n = copies_of(a, copies)
                .iter()
                .filter(|c| present.contains(*c))
                .count();
            1.0 / (1 + n) as f64
        })
        .collect()
}

/// `_exclusion`: the indexes of the quotes that stay in.
fn exclusion(
    fresh: &[&Quote],
    scatter: &[f64],
    votes: &[f64],
    stats: &IndexMap<String, ProviderStats>,
    params: &ConsensusParams,
) -> Res<Vec<usize>> {
    if fresh.len() < 2 {
        return Ok(vec![0]);
    }
    let prices: Vec<f64> = fresh.iter().map(|q| q.price).collect();
    let median = weighted_median(&prices, votes);
    let mut keep = Vec::new();
    for (i, q) in fresh.iter().enumerate() {
        let was_excluded = stats.get(&q.provider).is_some_and(|s| s.excluded);
        if !was_excluded && fresh.len() < 3 {
            keep.push(i);
            continue;
        }
        let sd = sqrt(scatter[i])?;
        let limit = if was_excluded {
            py_max(params.readmit_bps, params.readmit_sigmas * sd)
        } else {
            py_max(params.exclude_bps, params.exclude_sigmas * sd)
        };
        if div((q.price - median).abs(), median)? * 1e4 <= limit {
            keep.push(i);
        }
    }
    if keep.is_empty() {
        return Ok((0..fresh.len()).collect()); // never exclude everyone
    }
    Ok(keep)
}

/// `_combine`: the price, its error variance and each quote's weight in it (a Kalman filter
/// over the quotes in the order of their information times). Raises ZeroDivisionError where
/// Python's gain does (a variance and noise summing to 0).
fn combine(
    prices: &[f64],
    noises: &[f64],
    infos: &[i128],
    drift: f64,
    now_ms: i64,
) -> Res<(f64, f64, Vec<f64>)> {
    let n = prices.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| infos[i]); // stable: ties stay in provider order
    let first = order[0];
    let (mut price, mut var, mut at) = (prices[first], noises[first], infos[first]);
    let mut weights = vec![0.0; n];
    weights[first] = 1.0;
    let (mut low, mut high) = (price, price);
    for &j in &order[1..] {
        var += drift * (infos[j] - at) as f64; // the walk moved on since the last information
        at = infos[j];
        let gain = div(var, var + noises[j])?;
        price += gain * (prices[j] - price);
        var *= 1.0 - gain;
        for w in weights.iter_mut() {
            *w *= 1.0 - gain;
        }
        weights[j] = gain;
        low = py_min(low, prices[j]);
        high = py_max(high, prices[j]);
    }
    var += drift * (now_ms as i128 - at) as f64;
    Ok((py_min(py_max(price, low), high), var, weights))
}

/// `_error_var`: the variance of `truth(at_ms) - sum_j w_j y_j` for weights summing to 1.
fn error_var(weights: &[f64], noises: &[f64], infos: &[i128], drift: f64, at_ms: i128) -> f64 {
    let (mut noise, mut walk) = (0.0, 0.0);
    for ((&wj, &rj), &tj) in weights.iter().zip(noises).zip(infos) {
        noise += wj * wj * rj;
        walk += wj * (at_ms - tj).abs() as f64;
        for (&wk, &tk) in weights.iter().zip(infos) {
            walk -= 0.5 * wj * wk * (tj - tk).abs() as f64;
        }
    }
    noise + drift * walk
}

/// `_weighted_median`: the value at half the total weight; the midpoint of the two values
/// around it when half falls exactly between them.
fn weighted_median(values: &[f64], weights: &[f64]) -> f64 {
    let mut pairs: Vec<(f64, f64)> = values
        .iter()
        .copied()
        .zip(weights.iter().copied())
        .collect();
    py_sort_pairs(&mut pairs);
    let mut total = 0.0;
    for w in weights {
        total += w;
    }
    let half = total / 2.0;
    let tolerance = 1e-12 * half;
    let mut acc = 0.0;
    for (i, &(value, weight)) in pairs.iter().enumerate() {
        acc += weight;
        if acc > half + tolerance {
            return value;
        }
        if acc >= half - tolerance {
            return if i + 1 < pairs.len() {
                value / 2.0 + pairs[i + 1].0 / 2.0
            } else {
                value
            };
        }
    }
    pairs[pairs.len() - 1].0
}

/// `sorted()` of (float, float) tuples as CPython 3.11's list.sort does it for short lists (a
/// run count, then a binary insertion sort), with the tuples' `<` (the first items unless they
/// are `==`): the same order as Python's even with NaNs, where no total order exists. For 64
/// items or more CPython merges runs; that gives the same result whenever `<` is a total order
/// (no NaN), which validated prices guarantee.
fn py_sort_pairs(a: &mut [(f64, f64)]) {
    let lt = |x: &(f64, f64), y: &(f64, f64)| if x.0 == y.0 { x.1 < y.1 } else { x.0 < y.0 };
    let n = a.len();
    if n < 2 {
        return;
    }
    // count_run
    let mut run = 2;
    if lt(&a[1], &a[0]) {
        while run < n && lt(&a[run], &a[run - 1]) {
            run += 1;
        }
        a[..run].reverse();
    } else {
        while run < n && !lt(&a[run], &a[run - 1]) {
            run += 1;
        }
    }
    // binarysort(lo, hi, start=run)
    for start in run..n {
        let pivot = a[start];
        let (mut l, mut r) = (0, start);
        while l < r {
            let p = l + ((r - l) >> 1);
            if lt(&pivot, &a[p]) {
                r = p;
            } else {
                l = p + 1;
            }
        }
        a.copy_within(l..start, l + 1);
        a[l] = pivot;
    }
}

#[cfg(test)]
mod python_vectors {
    use super::{consensus, ConsensusParams, Quote};
    use crate::copies::{copies_of, CopySet};
    use crate::json::vectors::{enc, err, f, lines};
    use crate::reliability::ProviderStats;
    use indexmap::IndexMap;
    use serde_json::{json, Value};

    fn opt_f(v: &Value) -> Option<f64> {
        (!v.is_null()).then(|| f(v))
    }

    /// Random consensus inputs (extreme prices, equal times, stale quotes, excluded and
    /// lagging providers, copies) against the Python reference, with `without` for each
    /// inlier as the processor asks it.
    #[test]
    fn consensus_as_python() {
        let Some(lines) = lines("consensus") else {
            return;
        };
        let (mut n, mut raised) = (0, 0);
        for v in &lines {
            let inp = &v["in"];
            let quotes: Vec<Quote> = inp["quotes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| Quote {
                    provider: q[0].as_str().unwrap().into(),
                    price: f(&q[1]),
                    time_ms: q[2].as_i64().unwrap(),
                    bid: opt_f(&q[3]),
                    ask: opt_f(&q[4]),
                    since_ms: q[5].as_i64(),
                })
                .collect();
            let mut stats = IndexMap::new();
            for (p, s) in inp["stats"].as_object().unwrap() {
                let s: Value = serde_json::from_str(s.as_str().unwrap()).unwrap();
                stats.insert(p.clone(), ProviderStats::from_json(&s).unwrap());
            }
            let pr = &inp["params"];
            let params = ConsensusParams {
                stale_ms: pr[0].as_i64().unwrap(),
                min_noise_bps: f(&pr[1]),
                hit_bps: f(&pr[2]),
                ..ConsensusParams::default()
            };
            let copies: CopySet = inp["copies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
                .collect();
            let now = inp["now"].as_i64().unwrap();
            let got = match consensus(&quotes, now, &stats, f(&inp["drift"]), &params, &copies) {
                Err(e) => {
                    raised += 1;
                    err(&e)
                }
                Ok(None) => Value::Null,
                Ok(Some(r)) => {
                    let mut without = Vec::new();
                    for q in &r.quotes {
                        let lag = stats.get(&q.provider).map_or(0, |s| s.info_lag_ms);
                        let mut leave: Vec<&str> =
                            copies_of(&q.provider, &copies).into_iter().collect();
                        leave.push(&q.provider);
                        without.push(match r.without(&leave, q.news_ms() as i128 - lag as i128) {
                            Err(e) => err(&e),
                            Ok(None) => Value::Null,
                            Ok(Some(o)) => {
                                json!([enc(o.price), enc(o.error_var), enc(o.stated_ms)])
                            }
                        });
                    }
                    json!({
                        "price": enc(r.price), "band_low": enc(r.band_low),
                        "band_high": enc(r.band_high), "confidence": enc(r.confidence),
                        "used": r.used, "rejected": r.rejected, "flags": r.flags,
                        "variance": enc(r.variance_bps2),
                        "weights": r.weights.iter().map(|&w| enc(w)).collect::<Vec<_>>(),
                        "noises": r.noises.iter().map(|&w| enc(w)).collect::<Vec<_>>(),
                        "infos": r.infos.iter().map(|&t| serde_json::Number::from_i128(t).map(Value::Number)).collect::<Vec<_>>(),
                        "without": without,
                    })
                }
            };
            assert_eq!(got, v["out"], "{inp}");
            n += 1;
        }
        eprintln!("consensus: {n} inputs compared ({raised} raised)");
    }
}
