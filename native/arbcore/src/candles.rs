//! `agents/arbitration/core/candles.py`: tumbling UTC windows in event time.
//!
//! Windows live in an IndexMap because Python's dicts keep insertion order and the saved state
//! (`to_list`) lists them in that order; `shift_remove` is `dict.pop` (the others keep theirs).

use indexmap::IndexMap;
use serde_json::Value;

use crate::error::{py_max, py_min, Raised, Res};
use crate::json;
use crate::times::push_iso_ms;

/// `SCHEMA_VERSION` of `schemas/records.py`.
pub const SCHEMA_VERSION: i64 = 2;
/// `MAX_FLAT_WINDOWS`: most flat candles one gap gets, per interval.
pub const MAX_FLAT_WINDOWS: i64 = 1_000;

/// `Interval`: its value and its length in ms, in the order of `DEFAULT_INTERVALS`.
pub const INTERVALS: [(&str, i64); 6] = [
    ("1s", 1_000),
    ("1m", 60_000),
    ("5m", 300_000),
    ("15m", 900_000),
    ("1h", 3_600_000),
    ("1d", 86_400_000),
];

#[derive(Debug, Clone)]
pub struct Candle {
    pub start: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub volume: f64,
    pub trades: i64,
    pub rev: i64,
    pub dirty: bool,
}

impl Candle {
    fn new(start: i64, price: f64, first_ms: i64, last_ms: i64) -> Candle {
        Candle {
            start,
            open: price,
            high: price,
            low: price,
            close: price,
            first_ms,
            last_ms,
            volume: 0.0,
            trades: 0,
            rev: 0,
            dirty: true,
        }
    }

    pub fn add_price(&mut self, time_ms: i64, price: f64) {
        if time_ms < self.first_ms {
            self.open = price;
            self.first_ms = time_ms;
        }
        if time_ms >= self.last_ms {
            self.close = price;
            self.last_ms = time_ms;
        }
        self.high = py_max(self.high, price);
        self.low = py_min(self.low, price);
        self.dirty = true;
    }

    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        json::i64(out, self.start);
        for x in [self.open, self.high, self.low, self.close] {
            out.push(b',');
            json::f64(out, x);
        }
        out.push(b',');
        json::i64(out, self.first_ms);
        out.push(b',');
        json::i64(out, self.last_ms);
        out.push(b',');
        json::f64(out, self.volume);
        out.push(b',');
        json::i64(out, self.trades);
        out.push(b',');
        json::i64(out, self.rev);
        out.push(b',');
        json::bool(out, self.dirty);
        out.push(b']');
    }

    pub fn from_json(d: &Value) -> Res<Candle> {
        let d = list(d)?;
        if d.len() < 11 {
            return Err(bad_state());
        }
        Ok(Candle {
            start: int(&d[0])?,
            open: float(&d[1])?,
            high: float(&d[2])?,
            low: float(&d[3])?,
            close: float(&d[4])?,
            first_ms: int(&d[5])?,
            last_ms: int(&d[6])?,
            volume: float(&d[7])?,
            trades: int(&d[8])?,
            rev: int(&d[9])?,
            dirty: truthy(&d[10]),
        })
    }
}

/// `CandleSeries`: the windows of one interval that are not final yet.
#[derive(Debug, Clone)]
pub struct CandleSeries {
    pub interval: &'static str,
    pub ms: i64,
    pub windows: IndexMap<i64, Candle>,
    pub closed_until: i64,
    pub last_close: f64,
    pub late: i64,
    pub gap_windows: i64,
}

/// A candle revision ready to be written (`_record`'s `CandleRecord`).
#[derive(Debug, Clone)]
pub struct CandleRecord {
    pub interval: &'static str,
    pub start: i64,
    pub end: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub trades: i64,
    pub rev: i64,
    pub is_final: bool,
    pub event_time_ms: i64,
}

impl CandleRecord {
    /// `encode(CandleRecord.model())`: OHLCVUpdate's bytes, in its field order.
    pub fn write_json(&self, symbol: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"v\":");
        json::i64(out, SCHEMA_VERSION);
        out.extend_from_slice(b",\"symbol\":");
        json::str(out, symbol);
        out.extend_from_slice(b",\"interval\":");
        json::str(out, self.interval);
        out.extend_from_slice(b",\"window_start_ms\":");
        json::i64(out, self.start);
        out.extend_from_slice(b",\"window_end_ms\":");
        json::i64(out, self.end);
        for (k, v) in [
            (&b",\"open\":"[..], self.open),
            (b",\"high\":", self.high),
            (b",\"low\":", self.low),
            (b",\"close\":", self.close),
            (b",\"volume\":", self.volume),
        ] {
            out.extend_from_slice(k);
            json::f64(out, v);
        }
        out.extend_from_slice(b",\"trade_count\":");
        json::i64(out, self.trades);
        out.extend_from_slice(b",\"rev\":");
        json::i64(out, self.rev);
        out.extend_from_slice(b",\"is_final\":");
        json::bool(out, self.is_final);
        out.extend_from_slice(b",\"event_time_ms\":");
        json::i64(out, self.event_time_ms);
        out.extend_from_slice(b",\"timestamp\":\"");
        let mut iso = String::with_capacity(24);
        push_iso_ms(&mut iso, self.start);
        out.extend_from_slice(iso.as_bytes());
        out.extend_from_slice(b"\",\"is_closed\":");
        json::bool(out, self.is_final);
        out.push(b'}');
    }
}

/// `_record`: the candle's next revision (its `rev` and `dirty` change).
fn record(interval: &'static str, ms: i64, c: &mut Candle, is_final: bool) -> CandleRecord {
    let rev = c.rev;
    c.rev += 1;
    c.dirty = false;
    CandleRecord {
        interval,
        start: c.start,
        end: c.start + ms,
        open: c.open,
        high: c.high,
        low: c.low,
        close: c.close,
        volume: c.volume,
        trades: c.trades,
        rev,
        is_final,
        event_time_ms: c.last_ms,
    }
}

impl CandleSeries {
    pub fn new(interval: &'static str, ms: i64) -> CandleSeries {
        CandleSeries {
            interval,
            ms,
            windows: IndexMap::new(),
            closed_until: -1,
            last_close: 0.0,
            late: 0,
            gap_windows: 0,
        }
    }

    /// `_window`: the window of `time_ms`, opened if need be; None for a late one.
    fn window(&mut self, time_ms: i64, price: Option<f64>) -> Option<&mut Candle> {
        let start = time_ms - time_ms.rem_euclid(self.ms);
        if self.closed_until >= 0 && start < self.closed_until {
            self.late += 1;
            return None;
        }
        if !self.windows.contains_key(&start) {
            let price = match price {
                Some(p) => p,
                None => {
                    // volume before any price: open the window at the last close
                    if self.closed_until < 0 {
                        self.late += 1;
                        return None;
                    }
                    let mut p = self.last_close;
                    if p <= 0.0 && !self.windows.is_empty() {
                        // nothing closed yet: the newest open window's close
                        let newest = *self.windows.keys().max().expect("not empty");
                        p = self.windows[&newest].close;
                    }
                    if p <= 0.0 {
                        self.late += 1;
                        return None;
                    }
                    p
                }
            };
            self.windows
                .insert(start, Candle::new(start, price, time_ms, time_ms));
            if self.closed_until < 0 {
                self.closed_until = start;
            }
        }
        self.windows.get_mut(&start)
    }

    pub fn on_price(&mut self, time_ms: i64, price: f64) {
        if let Some(c) = self.window(time_ms, Some(price)) {
            c.add_price(time_ms, price);
        }
    }

    pub fn on_trade(&mut self, time_ms: i64, amount: f64) {
        if let Some(c) = self.window(time_ms, None) {
            c.volume += amount;
            c.trades += 1;
            c.dirty = true;
        }
    }

    pub fn close(&mut self, watermark_ms: i64, grace_ms: i64, max_flat: i64) -> Vec<CandleRecord> {
        let mut out = Vec::new();
        let step = self.ms;
        if self.closed_until < 0 {
            return out;
        }
        // the first window start that the watermark cannot close yet (Python's floor division)
        let closable_end = (watermark_ms - grace_ms - step).div_euclid(step) * step + step;
        while self.closed_until + step + grace_ms <= watermark_ms {
            let start = self.closed_until;
            let mut candle = match self.windows.shift_remove(&start) {
                Some(c) => c,
                None => {
                    // no price in this window: a flat candle, but at most `max_flat` of them
                    // before the next window with a price (or the watermark)
                    let end = self
                        .windows
                        .keys()
                        .filter(|&&s| s > start)
                        .min()
                        .copied()
                        .unwrap_or(closable_end);
                    let empty = (end.min(closable_end) - start).div_euclid(step);
                    if empty > max_flat {
                        self.gap_windows += empty - max_flat;
                        self.closed_until = start + (empty - max_flat) * step;
                        continue;
                    }
                    let p = self.last_close;
                    Candle::new(start, p, start, start)
                }
            };
            out.push(record(self.interval, self.ms, &mut candle, true));
            self.last_close = candle.close;
            self.closed_until = start + step;
        }
        out
    }

    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        json::str(out, self.interval);
        out.extend_from_slice(b",[");
        for (k, c) in self.windows.values().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            c.write_json(out);
        }
        out.extend_from_slice(b"],");
        json::i64(out, self.closed_until);
        out.push(b',');
        json::f64(out, self.last_close);
        out.push(b',');
        json::i64(out, self.late);
        out.push(b']');
    }

    pub fn from_json(d: &Value) -> Res<CandleSeries> {
        let d = list(d)?;
        if d.len() != 5 {
            return Err(bad_state());
        }
        let name = d[0].as_str().ok_or_else(bad_state)?;
        let &(interval, ms) = INTERVALS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(bad_state)?;
        let mut series = CandleSeries::new(interval, ms);
        for w in list(&d[1])? {
            let candle = Candle::from_json(w)?;
            series.windows.insert(candle.start, candle);
        }
        series.closed_until = int(&d[2])?;
        series.last_close = float(&d[3])?;
        series.late = int(&d[4])?;
        Ok(series)
    }
}

/// `SymbolCandles`: every interval's candles of one symbol, with the update throttle.
#[derive(Debug, Clone)]
pub struct SymbolCandles {
    pub series: Vec<CandleSeries>,
    pub last_update_ms: i64,
    /// every series has had a price (not saved: false on load, recomputed)
    pub started: bool,
}

impl SymbolCandles {
    pub fn new() -> SymbolCandles {
        SymbolCandles {
            series: INTERVALS
                .iter()
                .map(|&(i, ms)| CandleSeries::new(i, ms))
                .collect(),
            last_update_ms: -1,
            started: false,
        }
    }

    pub fn on_price(&mut self, time_ms: i64, price: f64) {
        for s in &mut self.series {
            let start = time_ms - time_ms.rem_euclid(s.ms);
            match s.windows.get_mut(&start) {
                None => s.on_price(time_ms, price),
                Some(c) => {
                    if time_ms < c.first_ms {
                        c.open = price;
                        c.first_ms = time_ms;
                    }
                    if time_ms >= c.last_ms {
                        c.close = price;
                        c.last_ms = time_ms;
                    }
                    if price > c.high {
                        c.high = price;
                    }
                    if price < c.low {
                        c.low = price;
                    }
                    c.dirty = true;
                }
            }
        }
    }

    pub fn on_trade(&mut self, time_ms: i64, amount: f64) {
        for s in &mut self.series {
            s.on_trade(time_ms, amount);
        }
    }

    /// Open candles changed since their last record, at most once per `throttle_ms`.
    pub fn updates(&mut self, now_ms: i64, throttle_ms: i64) -> Vec<CandleRecord> {
        if self.last_update_ms >= 0 && now_ms - self.last_update_ms < throttle_ms {
            return Vec::new();
        }
        self.last_update_ms = now_ms;
        let mut out = Vec::new();
        for s in &mut self.series {
            // sorted() by start; the windows are almost always in order already (distinct)
            if s.windows.keys().is_sorted() {
                for c in s.windows.values_mut() {
                    if c.dirty {
                        out.push(record(s.interval, s.ms, c, false));
                    }
                }
                continue;
            }
            let mut starts: Vec<i64> = s.windows.keys().copied().collect();
            starts.sort_unstable();
            for start in starts {
                let c = s.windows.get_mut(&start).expect("listed");
                if c.dirty {
                    out.push(record(s.interval, s.ms, c, false));
                }
            }
        }
        out
    }

    pub fn close(&mut self, watermark_ms: i64, grace_ms: i64) -> Vec<CandleRecord> {
        let mut out = Vec::new();
        for s in &mut self.series {
            out.extend(s.close(watermark_ms, grace_ms, MAX_FLAT_WINDOWS));
        }
        out
    }

    /// The open 1d candle whose UTC day contains `time_ms`.
    pub fn day(&self, time_ms: i64) -> Option<&Candle> {
        for s in self.series.iter().rev() {
            if s.interval == "1d" {
                return s.windows.get(&(time_ms - time_ms.rem_euclid(s.ms)));
            }
        }
        None
    }

    /// The watermark at which `close` will next return something (-1: never yet).
    pub fn next_close_ms(&self, grace_ms: i64) -> i64 {
        self.series
            .iter()
            .filter(|s| s.closed_until >= 0)
            .map(|s| s.closed_until + s.ms + grace_ms)
            .min()
            .unwrap_or(-1)
    }

    pub fn late(&self) -> i64 {
        self.series.first().map_or(0, |s| s.late)
    }

    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"[[");
        for (k, s) in self.series.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            s.write_json(out);
        }
        out.extend_from_slice(b"],");
        json::i64(out, self.last_update_ms);
        out.push(b']');
    }

    pub fn from_json(d: &Value) -> Res<SymbolCandles> {
        let d = list(d)?;
        if d.len() != 2 {
            return Err(bad_state());
        }
        let series = list(&d[0])?
            .iter()
            .map(CandleSeries::from_json)
            .collect::<Res<Vec<_>>>()?;
        Ok(SymbolCandles {
            series,
            last_update_ms: int(&d[1])?,
            started: false,
        })
    }
}

impl Default for SymbolCandles {
    fn default() -> Self {
        Self::new()
    }
}

// -- reading saved states: Python's int(), float() and bool() of JSON values ------------------

pub fn bad_state() -> Raised {
    Raised::new("ValueError", "not a saved arbitration state")
}

pub fn list(v: &Value) -> Res<&Vec<Value>> {
    v.as_array().ok_or_else(bad_state)
}

/// `int(x)` of a saved int (a float is truncated, as `int()`).
pub fn int(v: &Value) -> Res<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.trunc() as i64)
            })
            .ok_or_else(bad_state),
        Value::Bool(b) => Ok(i64::from(*b)),
        _ => Err(bad_state()),
    }
}

/// `float(x)` of a saved number.
pub fn float(v: &Value) -> Res<f64> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(bad_state),
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        _ => Err(bad_state()),
    }
}

/// `bool(x)`.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}
