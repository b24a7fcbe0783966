//! Strict parsing of `fiml.raw` records: `schemas.codec.decode_raw` for the input it can prove
//! pydantic accepts with the same field values, and nothing else.
//!
//! `parse` returns None whenever there is the least doubt (an unknown or duplicate key, a
//! missing one, a wrong type, a number outside i64, a nested value, a lone surrogate, invalid
//! UTF-8, bytes after the object); the caller then asks Python (`decode_raw`), which either
//! gives the record back in canonical form (pydantic's own encoding, which this parser takes)
//! or the dead-letter reason. So the compiled core never decides a record's validity on its
//! own when it is not certain, and the rare path costs a call into Python.

use std::borrow::Cow;

/// What the arbitration reads of a RawTick or RawTrade (the other fields are only validated).
#[derive(Debug, Clone)]
pub struct Raw {
    pub provider: String,
    pub symbol: String,
    pub asset_type: &'static str,
    pub price: f64,
    pub bid: Option<f64>,
    pub ask: Option<f64>,
    pub event_time_ms: i64,
    pub ingest_time_ms: i64,
    pub history: bool,
    /// Some for a RawTrade
    pub trade: Option<Trade>,
}

#[derive(Debug, Clone)]
pub struct Trade {
    pub trade_id: String,
    pub amount: f64,
    pub side: Option<&'static str>,
}

const ASSET_TYPES: [&str; 5] = ["crypto", "equity", "fx", "index", "commodity"];
const MAX_EPOCH_MS: i64 = crate::times::MAX_EPOCH_MS;

/// One JSON scalar as read, borrowed from the record where it can be (a string without
/// escapes, a number's text: int or float literal).
enum Value<'a> {
    Str(Cow<'a, str>),
    Num { text: &'a str, int: bool },
    Bool(bool),
    Null,
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if c == b' ' || c == b'\t' || c == b'\n' || c == b'\r' {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    fn lit(&mut self, word: &[u8]) -> Option<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// A JSON string (the opening quote is next), unescaped; `escaped` says whether it had
    /// escapes (keys with escapes are left to Python: `decode_raw` looks for `"trade_id"` in
    /// the bytes).
    fn string(&mut self) -> Option<(Cow<'a, str>, bool)> {
        self.eat(b'"')?;
        let start = self.i;
        // the fast path: no escape
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'"' => {
                    let s = std::str::from_utf8(&self.b[start..self.i]).ok()?;
                    self.i += 1;
                    return Some((Cow::Borrowed(s), false));
                }
                b'\\' => break,
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        let mut out: Vec<u8> = self.b[start..self.i].to_vec();
        loop {
            let c = *self.b.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => break,
                0..=0x1f => return None,
                b'\\' => {
                    let e = *self.b.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                // a surrogate pair, or doubt
                                self.lit(b"\\u")?;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return None;
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return None;
                            } else {
                                hi
                            };
                            let ch = char::from_u32(code)?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return None,
                    }
                }
                _ => out.push(c),
            }
        }
        Some((Cow::Owned(String::from_utf8(out).ok()?), true))
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.i..self.i + 4)?;
        let mut v = 0u32;
        for &d in digits {
            v = v * 16 + (d as char).to_digit(16)?;
        }
        self.i += 4;
        Some(v)
    }

    /// A number's text by JSON's grammar; `int` when it has neither fraction nor exponent.
    fn number(&mut self) -> Option<(&'a str, bool)> {
        let start = self.i;
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut int = true;
        if self.eat(b'.').is_some() {
            int = false;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e') | Some(b'E')) {
            int = false;
            self.i += 1;
            if matches!(self.peek(), Some(b'+') | Some(b'-')) {
                self.i += 1;
            }
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        Some((text, int))
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// A scalar value; objects and arrays are never a valid raw field: None.
    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'"' => Some(Value::Str(self.string()?.0)),
            b't' => self.lit(b"true").map(|_| Value::Bool(true)),
            b'f' => self.lit(b"false").map(|_| Value::Bool(false)),
            b'n' => self.lit(b"null").map(|_| Value::Null),
            b'-' | b'0'..=b'9' => {
                let (text, int) = self.number()?;
                Some(Value::Num { text, int })
            }
            _ => None,
        }
    }
}

#[derive(Default)]
struct Fields {
    provider: Option<String>,
    symbol: Option<String>,
    provider_symbol: bool,
    asset_type: Option<&'static str>,
    price: Option<f64>,
    bid: Option<f64>,
    ask: Option<f64>,
    event_time_ms: Option<i64>,
    ingest_time_ms: Option<i64>,
    seq: bool,
    history: bool,
    trade_id: Option<String>,
    amount: Option<f64>,
    side: Option<&'static str>,
    // keys of a tick only, and of a trade only
    tick_only: bool,
}

/// `decode_raw(data)` when it is certain to succeed, with the record's values; None: ask
/// Python.
pub fn parse(data: &[u8]) -> Option<Raw> {
    let mut r = Reader { b: data, i: 0 };
    let mut f = Fields::default();
    let mut seen: u32 = 0; // one bit per key: a duplicate key is left to Python
    r.ws();
    r.eat(b'{')?;
    r.ws();
    if r.eat(b'}').is_none() {
        loop {
            r.ws();
            let (key, escaped) = r.string()?;
            if escaped {
                return None;
            }
            r.ws();
            r.eat(b':')?;
            r.ws();
            let value = r.value()?;
            let bit = field(&mut f, &key, value)?;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            r.ws();
            if r.eat(b',').is_some() {
                continue;
            }
            r.eat(b'}')?;
            break;
        }
    }
    r.ws();
    if r.i != data.len() {
        return None;
    }
    let trade = match f.trade_id {
        Some(trade_id) => {
            if f.tick_only {
                return None;
            }
            Some(Trade {
                trade_id,
                amount: f.amount?,
                side: f.side,
            })
        }
        None => {
            // a tick: a trade's keys are not allowed (extra='forbid')
            if f.amount.is_some() || f.side.is_some() || seen & SIDE_BIT != 0 {
                return None;
            }
            None
        }
    };
    if !f.provider_symbol || !f.seq {
        return None;
    }
    Some(Raw {
        provider: f.provider?,
        symbol: f.symbol?,
        asset_type: f.asset_type?,
        price: f.price?,
        bid: f.bid,
        ask: f.ask,
        event_time_ms: f.event_time_ms?,
        ingest_time_ms: f.ingest_time_ms?,
        history: f.history,
        trade,
    })
}

const SIDE_BIT: u32 = 1 << 15;

/// Validates one key's value into `f`; its bit, or None (unknown key, invalid value).
fn field(f: &mut Fields, key: &str, value: Value<'_>) -> Option<u32> {
    Some(match key {
        "v" => {
            // strict int >= 1, of any size
            let Value::Num { text, int: true } = value else {
                return None;
            };
            if text.starts_with('-') || text == "0" {
                return None;
            }
            1 << 0
        }
        "provider" => {
            f.provider = Some(name(value)?);
            1 << 1
        }
        "symbol" => {
            f.symbol = Some(name(value)?);
            1 << 2
        }
        "provider_symbol" => {
            name(value)?;
            f.provider_symbol = true;
            1 << 3
        }
        "asset_type" => {
            let Value::Str(s) = value else { return None };
            f.asset_type = Some(*ASSET_TYPES.iter().find(|a| **a == s)?);
            1 << 4
        }
        "market" => {
            match value {
                Value::Str(_) | Value::Null => {}
                _ => return None,
            }
            1 << 5
        }
        "price" => {
            f.price = Some(price(value)?);
            1 << 6
        }
        "bid" => {
            f.bid = optional(value, price)?;
            f.tick_only = true;
            1 << 7
        }
        "ask" => {
            f.ask = optional(value, price)?;
            f.tick_only = true;
            1 << 8
        }
        "bid_size" | "ask_size" | "volume" => {
            optional(value, size)?;
            f.tick_only = true;
            match key {
                "bid_size" => 1 << 9,
                "ask_size" => 1 << 10,
                _ => 1 << 11,
            }
        }
        "event_time_ms" => {
            f.event_time_ms = Some(epoch_ms(value)?);
            1 << 12
        }
        "ingest_time_ms" => {
            f.ingest_time_ms = Some(epoch_ms(value)?);
            1 << 13
        }
        "seq" => {
            // strict int >= 0, of any size ("-0" is 0)
            let Value::Num { text, int: true } = value else {
                return None;
            };
            if text.starts_with('-') && text != "-0" {
                return None;
            }
            f.seq = true;
            1 << 14
        }
        "side" => {
            f.side = match value {
                Value::Null => None,
                Value::Str(s) if s == "buy" => Some("buy"),
                Value::Str(s) if s == "sell" => Some("sell"),
                _ => return None,
            };
            SIDE_BIT
        }
        "history" => {
            let Value::Bool(b) = value else { return None };
            f.history = b;
            1 << 16
        }
        "trade_id" => {
            f.trade_id = Some(name(value)?);
            1 << 17
        }
        "amount" => {
            f.amount = Some(size(value)?);
            1 << 18
        }
        _ => return None,
    })
}

/// `Name`: a string of 1 to 64 characters (code points, as Python counts).
fn name(value: Value<'_>) -> Option<String> {
    let Value::Str(s) = value else { return None };
    let n = s.chars().count();
    if (1..=64).contains(&n) {
        Some(s.into_owned())
    } else {
        None
    }
}

fn optional(value: Value<'_>, check: fn(Value<'_>) -> Option<f64>) -> Option<Option<f64>> {
    match value {
        Value::Null => Some(None),
        v => check(v).map(Some),
    }
}

/// A strict float from JSON: a float literal, or an int literal within i64 (pydantic converts
/// it with `as f64`, as Python's `float(int)` rounds); bigger ints are left to Python.
fn float(value: Value<'_>) -> Option<f64> {
    let Value::Num { text, int } = value else {
        return None;
    };
    if int {
        let i: i64 = text.parse().ok()?;
        Some(i as f64)
    } else {
        text.parse().ok()
    }
}

/// `Price`: finite and > 0.
fn price(value: Value<'_>) -> Option<f64> {
    let v = float(value)?;
    (v.is_finite() && v > 0.0).then_some(v)
}

/// `Size`: finite and >= 0 (-0.0 included, as pydantic's `ge=0`).
fn size(value: Value<'_>) -> Option<f64> {
    let v = float(value)?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// `EpochMs`: a strict int in 0..=MAX_EPOCH_MS.
fn epoch_ms(value: Value<'_>) -> Option<i64> {
    let Value::Num { text, int: true } = value else {
        return None;
    };
    let v: i64 = text.parse().ok()?;
    (0..=MAX_EPOCH_MS).contains(&v).then_some(v)
}
