//! The bytes of the derived records: orjson of the dicts `processor.py` builds (prices,
//! quotes, the dead-letter body of an invalid record), pydantic's `encode` of `TradeUpdate` and
//! `ProviderHealth` (the same bytes: its floats are orjson's), and `deadletter_headers`.
//! Fields in the models' declaration order, as Python writes them.

use crate::json;
use crate::times::push_iso_ms;

/// `SCHEMA_VERSION`.
const V: &[u8] = b"{\"v\":2,";
/// `agents/deadletter.py`'s `_MAX_REASON`, in characters.
const MAX_REASON: usize = 2000;
/// The logical topic the processor reads.
pub const RAW: &str = "fiml.raw";

/// `deadletter_headers(reason, RAW, partition, offset)`: the reason cut to 2000 characters.
pub fn deadletter_headers(
    reason: &str,
    partition: i64,
    offset: i64,
) -> Vec<(&'static str, Vec<u8>)> {
    let cut = match reason.char_indices().nth(MAX_REASON) {
        Some((i, _)) => &reason[..i],
        None => reason,
    };
    vec![
        ("fiml-error", cut.as_bytes().to_vec()),
        ("fiml-source", RAW.as_bytes().to_vec()),
        ("fiml-partition", partition.to_string().into_bytes()),
        ("fiml-offset", offset.to_string().into_bytes()),
    ]
}

/// `health_key`: `provider|symbol`.
pub fn health_key(provider: &str, symbol: &str) -> Vec<u8> {
    format!("{provider}|{symbol}").into_bytes()
}

fn str_list<S: AsRef<str>>(out: &mut Vec<u8>, xs: &[S]) {
    out.push(b'[');
    for (k, x) in xs.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        json::str(out, x.as_ref());
    }
    out.push(b']');
}

fn key(out: &mut Vec<u8>, name: &[u8]) {
    out.extend_from_slice(name);
}

/// `processor._price`'s dict, in PriceUpdate's field order.
pub struct PriceUpdate<'a> {
    pub symbol: &'a str,
    pub asset_type: &'a str,
    pub price: f64,
    pub confidence: f64,
    pub band_low: f64,
    pub band_high: f64,
    pub used: &'a [String],
    pub rejected: &'a [String],
    pub flags: &'a [&'static str],
    pub event_time_ms: i64,
    pub timestamp: &'a str,
    pub provider: &'a str,
    pub day_open: f64,
    pub change: f64,
    pub change_percent: f64,
    pub volume: Option<f64>,
    pub bid: Option<f64>,
    pub ask: Option<f64>,
}

impl PriceUpdate<'_> {
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(V);
        key(out, b"\"symbol\":");
        json::str(out, self.symbol);
        key(out, b",\"asset_type\":");
        json::str(out, self.asset_type);
        key(out, b",\"price\":");
        json::f64(out, self.price);
        key(out, b",\"confidence\":");
        json::f64(out, self.confidence);
        key(out, b",\"band_low\":");
        json::f64(out, self.band_low);
        key(out, b",\"band_high\":");
        json::f64(out, self.band_high);
        key(out, b",\"providers_used\":");
        str_list(out, self.used);
        key(out, b",\"providers_rejected\":");
        str_list(out, self.rejected);
        key(out, b",\"flags\":");
        str_list(out, self.flags);
        key(out, b",\"event_time_ms\":");
        json::i64(out, self.event_time_ms);
        key(out, b",\"source_ticks\":");
        json::i64(out, (self.used.len() + self.rejected.len()) as i64);
        key(out, b",\"timestamp\":");
        json::str(out, self.timestamp);
        key(out, b",\"provider\":");
        json::str(out, self.provider);
        key(out, b",\"day_open\":");
        json::f64(out, self.day_open);
        key(out, b",\"change\":");
        json::f64(out, self.change);
        key(out, b",\"change_percent\":");
        json::f64(out, self.change_percent);
        key(out, b",\"volume\":");
        json::opt_f64(out, self.volume);
        key(out, b",\"bid\":");
        json::opt_f64(out, self.bid);
        key(out, b",\"ask\":");
        json::opt_f64(out, self.ask);
        out.push(b'}');
    }
}

/// `processor._quote`'s dict, in QuoteUpdate's field order.
pub struct QuoteUpdate<'a> {
    pub symbol: &'a str,
    pub bid: f64,
    pub ask: f64,
    pub providers: &'a [String],
    pub event_time_ms: i64,
    pub timestamp: &'a str,
}

impl QuoteUpdate<'_> {
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(V);
        key(out, b"\"symbol\":");
        json::str(out, self.symbol);
        key(out, b",\"bid\":");
        json::f64(out, self.bid);
        key(out, b",\"ask\":");
        json::f64(out, self.ask);
        key(out, b",\"bid_size\":null,\"ask_size\":null,\"providers\":");
        str_list(out, self.providers);
        key(out, b",\"event_time_ms\":");
        json::i64(out, self.event_time_ms);
        key(out, b",\"spread\":");
        json::f64(out, self.ask - self.bid);
        key(out, b",\"timestamp\":");
        json::str(out, self.timestamp);
        out.push(b'}');
    }
}

/// `ProviderHealth(...)` as `processor._health` fills it (no reason).
pub struct ProviderHealth<'a> {
    pub provider: &'a str,
    pub state: &'a str,
    pub symbol: &'a str,
    pub event_time_ms: i64,
    pub reliability: f64,
    pub error_bps: f64,
    pub staleness_ms: f64,
    pub ticks: i64,
    pub errors: i64,
}

impl ProviderHealth<'_> {
    /// The model's checks that can fail here (Unit, Size, Count; the names and times hold by
    /// construction): false means pydantic raises, and Python is asked for its message.
    pub fn valid(&self) -> bool {
        (0.0..=1.0).contains(&self.reliability)
            && self.error_bps.is_finite()
            && self.error_bps >= 0.0
            && self.staleness_ms.is_finite()
            && self.ticks >= 0
            && self.errors >= 0
    }

    /// `encode(ProviderHealth(...))`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(V);
        key(out, b"\"provider\":");
        json::str(out, self.provider);
        key(out, b",\"state\":");
        json::str(out, self.state);
        key(out, b",\"symbol\":");
        json::str(out, self.symbol);
        key(out, b",\"reason\":null,\"event_time_ms\":");
        json::i64(out, self.event_time_ms);
        key(out, b",\"reliability\":");
        json::f64(out, self.reliability);
        key(out, b",\"error_bps\":");
        json::f64(out, self.error_bps);
        key(out, b",\"staleness_ms\":");
        json::f64(out, self.staleness_ms);
        key(out, b",\"ticks\":");
        json::i64(out, self.ticks);
        key(out, b",\"errors\":");
        json::i64(out, self.errors);
        out.push(b'}');
    }
}

/// `TradeUpdate(...)` as `processor._apply` fills it (one provider).
pub struct TradeUpdate<'a> {
    pub symbol: &'a str,
    pub trade_id: &'a str,
    pub price: f64,
    pub amount: f64,
    pub side: Option<&'a str>,
    pub provider: &'a str,
    pub event_time_ms: i64,
}

impl TradeUpdate<'_> {
    /// The model's one check that can fail here: `trade_id` (provider:id) is a Name of at most
    /// 64 characters.
    pub fn valid(&self) -> bool {
        self.trade_id.chars().count() <= 64
    }

    /// `encode(TradeUpdate(...))`: `quantity` and `timestamp` derived.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(V);
        key(out, b"\"symbol\":");
        json::str(out, self.symbol);
        key(out, b",\"trade_id\":");
        json::str(out, self.trade_id);
        key(out, b",\"price\":");
        json::f64(out, self.price);
        key(out, b",\"amount\":");
        json::f64(out, self.amount);
        key(out, b",\"side\":");
        match self.side {
            Some(s) => json::str(out, s),
            None => json::null(out),
        }
        key(out, b",\"providers\":[");
        json::str(out, self.provider);
        key(out, b"],\"event_time_ms\":");
        json::i64(out, self.event_time_ms);
        key(out, b",\"quantity\":");
        json::f64(out, self.amount);
        key(out, b",\"timestamp\":\"");
        let mut iso = String::with_capacity(24);
        push_iso_ms(&mut iso, self.event_time_ms);
        out.extend_from_slice(iso.as_bytes());
        out.extend_from_slice(b"\"}");
    }
}

/// The body of `processor._invalid`: the symbol, its newest event time and the values, a
/// non-finite one as `str(v)` ('inf', '-inf', 'nan').
pub fn invalid_body(body: &mut Vec<u8>, symbol: &str, event_time_ms: i64, values: &[(&str, f64)]) {
    body.extend_from_slice(b"{\"symbol\":");
    json::str(body, symbol);
    body.extend_from_slice(b",\"event_time_ms\":");
    json::i64(body, event_time_ms);
    for (k, v) in values {
        body.push(b',');
        json::str(body, k);
        body.push(b':');
        if v.is_finite() {
            json::f64(body, *v);
        } else {
            json::str(body, &json::py_repr_f64(*v));
        }
    }
    body.push(b'}');
}
