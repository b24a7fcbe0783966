//! `agents/arbitration/core/state.py`: the per-symbol state and its bytes (version 5).
//!
//! Every dict of the Python state is an IndexMap here: Python dicts keep insertion order, and
//! `to_bytes` writes them in that order.

use indexmap::IndexMap;
use serde_json::Value;

use crate::candles::{bad_state, int, list, SymbolCandles};
use crate::consensus::Quote;
use crate::copies::Agreement;
use crate::error::{Raised, Res};
use crate::json;
use crate::lags::LagLearner;
use crate::reliability::ProviderStats;
use crate::volatility::Volatility;

/// A trade key `(price, amount, event time)` as a dict key: Python compares the floats by
/// value, so -0.0 and 0.0 are one key (an amount may be -0.0); the first key written stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TradeKey(u64, u64, i64);

impl TradeKey {
    pub fn new(price: f64, amount: f64, time_ms: i64) -> TradeKey {
        // + 0.0 turns -0.0 into 0.0 and leaves every other value as it is
        TradeKey((price + 0.0).to_bits(), (amount + 0.0).to_bits(), time_ms)
    }
}

/// The counts of one trade key, with the key's floats as first written.
#[derive(Debug, Clone)]
pub struct TradeCounts {
    pub price: f64,
    pub amount: f64,
    pub time_ms: i64,
    pub counts: IndexMap<String, i64>,
}

#[derive(Debug, Clone)]
pub struct SymbolState {
    pub symbol: String,
    pub asset_type: String,
    pub partition: i64,
    pub candles: SymbolCandles,
    pub quotes: IndexMap<String, Quote>,
    pub stats: IndexMap<String, ProviderStats>,
    pub newest_ms: i64,
    pub trade_keys: IndexMap<TradeKey, TradeCounts>,
    pub trade_ids: IndexMap<String, i64>,
    pub duplicates: i64,
    pub volatility: Volatility,
    pub agreement: Agreement,
    pub lags: IndexMap<String, LagLearner>,
    /// event time of its last fiml.quotes record (the quote throttle); -1: none yet
    pub last_quote_ms: i64,
}

impl SymbolState {
    pub fn new(symbol: String, asset_type: String, partition: i64) -> SymbolState {
        SymbolState {
            symbol,
            asset_type,
            partition,
            candles: SymbolCandles::new(),
            quotes: IndexMap::new(),
            stats: IndexMap::new(),
            newest_ms: -1,
            trade_keys: IndexMap::new(),
            trade_ids: IndexMap::new(),
            duplicates: 0,
            volatility: Volatility::default(),
            agreement: Agreement::default(),
            lags: IndexMap::new(),
            last_quote_ms: -1,
        }
    }

    /// `SymbolState.to_bytes`: orjson of the version 5 list.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(b"[5,");
        json::str(&mut out, &self.symbol);
        out.push(b',');
        json::str(&mut out, &self.asset_type);
        out.push(b',');
        json::i64(&mut out, self.partition);
        out.push(b',');
        self.candles.write_json(&mut out);
        out.extend_from_slice(b",[");
        for (k, q) in self.quotes.values().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.push(b'[');
            json::str(&mut out, &q.provider);
            out.push(b',');
            json::f64(&mut out, q.price);
            out.push(b',');
            json::i64(&mut out, q.time_ms);
            out.push(b',');
            json::opt_f64(&mut out, q.bid);
            out.push(b',');
            json::opt_f64(&mut out, q.ask);
            out.push(b',');
            json::opt_i64(&mut out, q.since_ms);
            out.push(b']');
        }
        out.extend_from_slice(b"],{");
        for (k, (p, s)) in self.stats.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            json::str(&mut out, p);
            out.push(b':');
            s.write_json(&mut out);
        }
        out.extend_from_slice(b"},");
        json::i64(&mut out, self.newest_ms);
        out.extend_from_slice(b",[");
        for (k, t) in self.trade_keys.values().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.push(b'[');
            json::f64(&mut out, t.price);
            out.push(b',');
            json::f64(&mut out, t.amount);
            out.push(b',');
            json::i64(&mut out, t.time_ms);
            out.extend_from_slice(b",{");
            write_counts(&mut out, &t.counts);
            out.extend_from_slice(b"}]");
        }
        out.extend_from_slice(b"],{");
        write_counts(&mut out, &self.trade_ids);
        out.extend_from_slice(b"},");
        json::i64(&mut out, self.duplicates);
        out.push(b',');
        self.volatility.write_json(&mut out);
        out.push(b',');
        self.agreement.write_json(&mut out);
        out.extend_from_slice(b",{");
        for (k, (p, lag)) in self.lags.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            json::str(&mut out, p);
            out.push(b':');
            lag.write_json(&mut out);
        }
        out.extend_from_slice(b"},");
        json::i64(&mut out, self.last_quote_ms);
        out.push(b']');
        out
    }

    /// `SymbolState.from_bytes` (versions 2 to 5) of a state already parsed: a checkpoint
    /// holds its states as JSON values.
    pub fn from_value(saved: &Value) -> Res<SymbolState> {
        let saved = list(saved)?;
        if saved.len() < 11 {
            return Err(bad_state());
        }
        let version = int(&saved[0])?;
        let text = |v: &Value| v.as_str().map(str::to_owned).ok_or_else(bad_state);
        let r1 = |e: String| Raised::new("ValueError", e);
        let mut st = SymbolState::new(text(&saved[1])?, text(&saved[2])?, int(&saved[3])?);
        st.candles = SymbolCandles::from_json(&saved[4])?;
        for q in list(&saved[5])? {
            let q = list(q)?;
            if q.len() < 3 || q.len() > 6 {
                return Err(bad_state());
            }
            let opt_f = |i: usize| -> Res<Option<f64>> {
                match q.get(i) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => crate::candles::float(v).map(Some),
                }
            };
            let since = match q.get(5) {
                None | Some(Value::Null) => None,
                Some(v) => Some(int(v)?),
            };
            let quote = Quote {
                provider: text(&q[0])?,
                price: crate::candles::float(&q[1])?,
                time_ms: int(&q[2])?,
                bid: opt_f(3)?,
                ask: opt_f(4)?,
                since_ms: since,
            };
            st.quotes.insert(quote.provider.clone(), quote);
        }
        for (p, s) in saved[6].as_object().ok_or_else(bad_state)? {
            st.stats
                .insert(p.clone(), ProviderStats::from_json(s).map_err(r1)?);
        }
        st.newest_ms = int(&saved[7])?;
        for k in list(&saved[8])? {
            let k = list(k)?;
            if k.len() != 4 {
                return Err(bad_state());
            }
            let (price, amount) = (crate::candles::float(&k[0])?, crate::candles::float(&k[1])?);
            let time_ms = int(&k[2])?;
            let counts = counts(&k[3])?;
            // a later equal key replaces the counts but keeps the first key (dict semantics)
            match st.trade_keys.entry(TradeKey::new(price, amount, time_ms)) {
                indexmap::map::Entry::Occupied(mut e) => e.get_mut().counts = counts,
                indexmap::map::Entry::Vacant(e) => {
                    e.insert(TradeCounts {
                        price,
                        amount,
                        time_ms,
                        counts,
                    });
                }
            }
        }
        st.trade_ids = counts(&saved[9])?;
        st.duplicates = int(&saved[10])?;
        if version >= 3 {
            let (vol, agr) = (
                saved.get(11).ok_or_else(bad_state)?,
                saved.get(12).ok_or_else(bad_state)?,
            );
            st.volatility = Volatility::from_json(vol).map_err(r1)?;
            st.agreement = Agreement::from_json(agr).map_err(r1)?;
        }
        if version >= 4 {
            for (p, x) in saved
                .get(13)
                .and_then(Value::as_object)
                .ok_or_else(bad_state)?
            {
                st.lags
                    .insert(p.clone(), LagLearner::from_json(x).map_err(r1)?);
            }
        }
        if version >= 5 {
            // version 4 (before issue 19) had no quote throttle: the next quote goes at once
            st.last_quote_ms = int(saved.get(14).ok_or_else(bad_state)?)?;
        }
        Ok(st)
    }

    /// Forget trades older than `horizon_ms` (event time); the dicts are made anew in Python,
    /// which keeps their order.
    pub fn prune(&mut self, horizon_ms: i64) {
        self.trade_keys.retain(|_, t| t.time_ms >= horizon_ms);
        self.trade_ids.retain(|_, t| *t >= horizon_ms);
    }
}

fn write_counts(out: &mut Vec<u8>, counts: &IndexMap<String, i64>) {
    for (k, (p, n)) in counts.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        json::str(out, p);
        out.push(b':');
        json::i64(out, *n);
    }
}

fn counts(v: &Value) -> Res<IndexMap<String, i64>> {
    v.as_object()
        .ok_or_else(bad_state)?
        .iter()
        .map(|(k, n)| Ok((k.clone(), int(n)?)))
        .collect()
}
