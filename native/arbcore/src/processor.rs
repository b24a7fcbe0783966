//! `agents/arbitration/core/processor.py`'s `Processor`: raw records in, encoded outputs out.
//!
//! One function per Python function, with the same name and the same order of operations:
//! every float operation, every state change made before an exception (which dead-letters the
//! record and keeps the partial state, as the Python `except Exception` does), and the cached
//! state bytes of `_saved` (a state changed without being marked dirty keeps its old bytes in
//! the next mark, as in Python). The few messages only Python can write (pydantic's, the time
//! bounds') come from the `Oracle`, the Python side's callbacks.
//!
//! Comparisons are written as in Python, `!(a < b)` included: NaN fails every comparison, and
//! the negated form is what makes a NaN invalid.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;

use indexmap::IndexMap;

use crate::candles::CandleRecord;
use crate::checkpoint;
use crate::consensus::{consensus, ConsensusParams, ConsensusResult, Quote};
use crate::copies::{copies_of, CopySet};
use crate::error::{div, py_max, py_min, Raised, Res};
use crate::json;
use crate::raw::{self, Raw};
use crate::records::{
    deadletter_headers, health_key, invalid_body, PriceUpdate, ProviderHealth, QuoteUpdate,
    TradeUpdate,
};
use crate::reliability::ProviderStats;
use crate::state::{SymbolState, TradeCounts, TradeKey};
use crate::times::{iso_ms, MAX_EPOCH_MS};

const INF: f64 = f64::INFINITY;
const HOUR: i64 = 3_600_000;

/// What the processor reads of `ArbitrationSettings` (engine.py writes it as JSON).
#[derive(Debug, Clone)]
pub struct Settings {
    pub grace_ms: i64,
    pub throttle_ms: i64,
    pub quote_ms: i64,
    pub health_every_ms: i64,
    pub dedup_ms: i64,
    pub stale_ms: HashMap<String, i64>,
    pub max_symbols: i64,
    pub max_ahead_ms: i64,
    pub max_age_ms: HashMap<String, i64>,
}

impl Settings {
    /// `ArbitrationSettings.stale_for`.
    fn stale_for(&self, asset_type: &str) -> i64 {
        self.stale_ms.get(asset_type).copied().unwrap_or(60_000)
    }

    /// `TimeBounds.problem` without its message: whether the record is out of its bounds.
    fn out_of_time(&self, rec: &Raw) -> bool {
        let ahead = rec.event_time_ms - rec.ingest_time_ms;
        if ahead > self.max_ahead_ms {
            return true;
        }
        let limit = self.max_age_ms.get(rec.asset_type).copied().unwrap_or(HOUR);
        !rec.history && -ahead > limit
    }
}

/// The Python side: the messages and the decoding only Python can give exactly.
pub trait Oracle {
    /// `decode_raw(value)`: Ok(its canonical bytes, which `raw::parse` reads) or Err(the
    /// dead-letter reason).
    fn decode(&self, value: Option<&[u8]>) -> Result<Vec<u8>, String>;
    /// The dead-letter reason of a record out of its time bounds (`OutOfTimeError: ...`).
    fn out_of_time(&self, value: &[u8]) -> String;
    /// The reason `TradeUpdate(...)` raises for these fields.
    #[allow(clippy::too_many_arguments)]
    fn trade_error(
        &self,
        symbol: &str,
        trade_id: &str,
        price: f64,
        amount: f64,
        side: Option<&str>,
        provider: &str,
        event_time_ms: i64,
    ) -> String;
    /// The reason `ProviderHealth(...)` raises for these fields.
    #[allow(clippy::too_many_arguments)]
    fn health_error(
        &self,
        provider: &str,
        state: &str,
        symbol: &str,
        event_time_ms: i64,
        reliability: f64,
        error_bps: f64,
        staleness_ms: f64,
        ticks: i64,
        errors: i64,
    ) -> String;
}

/// One output: (logical topic, key, value, partition, headers); the key and the value are
/// ranges of their partition's `Outputs::bytes` (one buffer, not two allocations an output).
#[derive(Debug, Clone)]
pub struct Output {
    pub topic: &'static str,
    pub key: Option<Range<usize>>,
    /// None only for a dead-lettered record that had no value (a tombstone)
    pub value: Option<Range<usize>>,
    pub partition: Option<i64>,
    pub headers: Option<Vec<(&'static str, Vec<u8>)>>,
}

/// The outputs of one source partition since the last drain.
#[derive(Debug, Default)]
pub struct Outputs {
    pub bytes: Vec<u8>,
    pub items: Vec<Output>,
}

impl Outputs {
    pub fn slice(&self, range: &Option<Range<usize>>) -> Option<&[u8]> {
        range.as_ref().map(|r| &self.bytes[r.clone()])
    }

    fn copy(&mut self, data: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        start..self.bytes.len()
    }
}

type Headers = Vec<(&'static str, Vec<u8>)>;

/// `_Partition`: -1 for "none yet" (never 0: `Default` is `new`).
#[derive(Debug)]
pub struct Partition {
    pub applied: i64,
    pub watermark: i64,
    pub next_close: i64,
    pub symbols: IndexMap<String, SymbolState>,
}

impl Default for Partition {
    fn default() -> Self {
        Partition::new()
    }
}

impl Partition {
    fn new() -> Partition {
        Partition {
            applied: -1,
            watermark: -1,
            next_close: -1,
            symbols: IndexMap::new(),
        }
    }
}

pub struct Processor {
    pub settings: Settings,
    /// partitions whose mark changed since it was last saved
    pub marks: BTreeSet<i64>,
    saved: HashMap<i64, BTreeMap<String, Vec<u8>>>,
    partitions: HashMap<i64, Partition>,
    outputs: IndexMap<i64, Outputs>,
    /// partition -> its symbols whose state changed since the partition's last mark (a
    /// symbol may be in two partitions, each with its own state, marked on its own)
    dirty: HashMap<i64, HashSet<String>>,
    pub poison: i64,
    pub out_of_time: i64,
    pub invalid: i64,
    applying: i64,
    pub skipped: i64,
}

/// A reason from Python (`"Type: message"`) as the exception it names.
fn raised_from_reason(reason: String) -> Raised {
    match reason.split_once(": ") {
        Some((kind, message)) => {
            let kind: &'static str = match kind {
                "ValidationError" => "ValidationError",
                "ValueError" => "ValueError",
                other => Box::leak(other.to_owned().into_boxed_str()),
            };
            Raised::new(kind, message)
        }
        None => Raised::new("Exception", reason),
    }
}

/// `_bps2`: the squared relative difference of two prices, in bp².
fn bps2(a: f64, b: f64) -> Res<f64> {
    let d = (div(a, b)? - 1.0) * 1e4;
    Ok(d * d)
}

/// `f"{n:,}"`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Processor {
    pub fn new(settings: Settings) -> Processor {
        Processor {
            settings,
            marks: BTreeSet::new(),
            saved: HashMap::new(),
            partitions: HashMap::new(),
            outputs: IndexMap::new(),
            dirty: HashMap::new(),
            poison: 0,
            out_of_time: 0,
            invalid: 0,
            applying: -1,
            skipped: 0,
        }
    }

    // -- life cycle ------------------------------------------------------------------------

    /// `restore`: the partition from its mark. On an error the partition is left as Python
    /// leaves it (empty, or with the states read before the bad one).
    pub fn restore(&mut self, partition: i64, mark: Option<&[u8]>) -> Res<()> {
        self.forget(&[partition]);
        self.partitions.insert(partition, Partition::new());
        if let Some(mark) = mark.filter(|m| !m.is_empty()) {
            let cp = checkpoint::from_bytes(mark)?;
            let part = self.partitions.get_mut(&partition).expect("inserted");
            part.applied = cp.applied;
            part.watermark = cp.watermark;
            for saved in &cp.states {
                let st = SymbolState::from_value(saved)?;
                part.symbols.insert(st.symbol.clone(), st);
            }
        }
        let grace = self.settings.grace_ms;
        refresh_next_close(
            self.partitions.get_mut(&partition).expect("inserted"),
            grace,
        );
        Ok(())
    }

    pub fn forget(&mut self, partitions: &[i64]) {
        for p in partitions {
            self.partitions.remove(p);
            self.saved.remove(p);
            self.outputs.shift_remove(p);
            self.marks.remove(p);
            self.dirty.remove(p);
        }
    }

    pub fn drain_partitions(&mut self) -> IndexMap<i64, Outputs> {
        std::mem::take(&mut self.outputs)
    }

    pub fn resume_offset(&self, partition: i64) -> Option<i64> {
        match self.partitions.get(&partition) {
            Some(part) if part.applied >= 0 => Some(part.applied + 1),
            _ => None,
        }
    }

    pub fn symbol_state(&mut self, partition: i64, symbol: &str) -> Option<&SymbolState> {
        self.partition(partition).symbols.get(symbol)
    }

    pub fn late_ticks(&self) -> i64 {
        self.partitions
            .values()
            .flat_map(|p| p.symbols.values())
            .map(|st| st.candles.late())
            .sum()
    }

    fn partition(&mut self, partition: i64) -> &mut Partition {
        self.partitions.entry(partition).or_default()
    }

    /// `_state`: the index of the record's symbol in the partition, created if new.
    fn state(&self, part: &mut Partition, partition: i64, rec: &Raw) -> Res<usize> {
        if let Some(i) = part.symbols.get_index_of(&rec.symbol) {
            return Ok(i);
        }
        if part.symbols.len() as i64 >= self.settings.max_symbols {
            return Err(Raised::new(
                "SymbolLimitError",
                format!(
                    "partition {partition} already holds {} symbols (FIML_ARB_MAX_SYMBOLS); a \
                     record of a new symbol is refused",
                    thousands(part.symbols.len())
                ),
            ));
        }
        let st = SymbolState::new(rec.symbol.clone(), rec.asset_type.to_owned(), partition);
        Ok(part.symbols.insert_full(rec.symbol.clone(), st).0)
    }

    /// `_emit` of a record this processor writes: `write` appends its value.
    fn emit(
        &mut self,
        partition: i64,
        topic: &'static str,
        key: &[u8],
        to: Option<i64>,
        headers: Option<Headers>,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let outputs = self.outputs.entry(partition).or_default();
        let key = Some(outputs.copy(key));
        let start = outputs.bytes.len();
        write(&mut outputs.bytes);
        let value = Some(start..outputs.bytes.len());
        outputs.items.push(Output {
            topic,
            key,
            value,
            partition: to,
            headers,
        });
    }

    /// `_emit` of a raw record as it came (a dead letter).
    fn emit_raw(
        &mut self,
        partition: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Headers,
    ) {
        let outputs = self.outputs.entry(partition).or_default();
        let key = key.map(|k| outputs.copy(k));
        let value = value.map(|v| outputs.copy(v));
        let topic = "fiml.deadletter";
        outputs.items.push(Output {
            topic,
            key,
            value,
            partition: None,
            headers: Some(headers),
        });
    }

    // -- records ---------------------------------------------------------------------------

    pub fn process(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        partition: i64,
        offset: i64,
        oracle: &dyn Oracle,
    ) {
        let mut part = self.partitions.remove(&partition).unwrap_or_default();
        self.process_in(&mut part, key, value, partition, offset, oracle);
        self.partitions.insert(partition, part);
    }

    fn process_in(
        &mut self,
        part: &mut Partition,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        partition: i64,
        offset: i64,
        oracle: &dyn Oracle,
    ) {
        if offset <= part.applied {
            self.skipped += 1;
            return;
        }
        part.applied = offset;
        self.marks.insert(partition);
        self.applying = offset;
        let parsed = value.and_then(raw::parse);
        let record = match parsed {
            Some(rec) => rec,
            None => match oracle.decode(value) {
                Ok(canonical) => match raw::parse(&canonical) {
                    Some(rec) => rec,
                    None => {
                        // pydantic took it, and its own encoding is beyond this parser: a
                        // divergence from the reference (never seen; see the README)
                        let reason = "UnreadableError: the compiled core cannot read the canonical form of this record";
                        self.dead(key, value, partition, offset, reason);
                        return;
                    }
                },
                Err(reason) => {
                    self.dead(key, value, partition, offset, &reason);
                    return;
                }
            },
        };
        if self.settings.out_of_time(&record) {
            self.out_of_time += 1;
            let reason = oracle.out_of_time(value.unwrap_or_default());
            self.dead(key, value, partition, offset, &reason);
            return;
        }
        let i = match self.state(part, partition, &record) {
            Ok(i) => i,
            Err(exc) => {
                // the symbol limit: nothing changed
                self.dead(key, value, partition, offset, &exc.reason());
                return;
            }
        };
        // changed from here on, even if applying raises part-way (processor.py)
        mark_dirty(&mut self.dirty, partition, &part.symbols[i].symbol);
        if let Err(exc) = self.apply(part, i, &record, partition, oracle) {
            // whatever applying one record raises is that record's fault (processor.py)
            self.dead(key, value, partition, offset, &exc.reason());
        }
    }

    /// `mark`: only the states changed since the previous mark are serialised again.
    pub fn mark(&mut self, partition: i64) -> Vec<u8> {
        let part = self.partitions.entry(partition).or_default();
        let states = self.saved.entry(partition).or_default();
        let changed = self.dirty.remove(&partition).unwrap_or_default();
        for (symbol, st) in &part.symbols {
            // or restored and never changed since
            if changed.contains(symbol) || !states.contains_key(symbol) {
                states.insert(symbol.clone(), st.to_bytes());
            }
        }
        self.marks.remove(&partition);
        checkpoint::to_bytes(
            part.applied,
            part.watermark,
            states.values().map(Vec::as_slice),
        )
    }

    fn dead(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        partition: i64,
        offset: i64,
        reason: &str,
    ) {
        self.poison += 1;
        let headers = deadletter_headers(reason, partition, offset);
        self.emit_raw(partition, key, value, headers);
    }

    fn apply(
        &mut self,
        part: &mut Partition,
        i: usize,
        rec: &Raw,
        partition: i64,
        oracle: &dyn Oracle,
    ) -> Res<()> {
        let t = rec.event_time_ms;
        if let Some(trade) = &rec.trade {
            // checked before anything changes: a volume of infinity is null on the wire
            let day = part.symbols[i].candles.day(t);
            if !(trade.amount + day.map_or(0.0, |d| d.volume) < INF) {
                return Err(Raised::new(
                    "OverflowError",
                    format!(
                        "amount {} overflows the day's volume",
                        json::py_repr_f64(trade.amount)
                    ),
                ));
            }
        }
        if t > part.watermark && !rec.history {
            // history never moves the live watermark
            part.watermark = t;
            if 0 <= part.next_close && part.next_close <= t {
                self.close_partition(part, partition);
            }
        }
        let st = &mut part.symbols[i];
        if t > st.newest_ms {
            st.newest_ms = t;
        }
        let (bid, ask) = match &rec.trade {
            Some(trade) => {
                if !self.new_trade(st, rec, &trade.trade_id) {
                    return Ok(());
                }
                spread(st, &rec.provider)
            }
            None => (rec.bid, rec.ask),
        };
        let old = st.quotes.get(&rec.provider);
        if old.is_none_or(|o| o.time_ms <= t) {
            // a provider's older tick never replaces its newer
            let same = old.is_some_and(|o| o.price == rec.price);
            let since = match old {
                Some(o) if same => Some(o.news_ms()),
                _ => None,
            };
            let quote = Quote {
                provider: rec.provider.clone(),
                price: rec.price,
                time_ms: t,
                bid,
                ask,
                since_ms: since,
            };
            st.quotes.insert(rec.provider.clone(), quote);
        }
        self.price(st, rec, partition, oracle)?;
        if let Some(trade) = &rec.trade {
            if self.counted(st, rec, trade.amount) {
                st.candles.on_trade(t, trade.amount);
                let value = trade_update(st, rec, trade, oracle)?;
                let key = st.symbol.as_bytes();
                self.emit(
                    partition,
                    "fiml.trades",
                    key,
                    Some(partition),
                    None,
                    |out| out.extend_from_slice(&value),
                );
            }
        }
        let updates = st.candles.updates(st.newest_ms, self.settings.throttle_ms);
        if !updates.is_empty() {
            // throttled: most ticks have none
            self.candles(updates, st, partition);
        }
        if !st.candles.started {
            // once every interval has a window, only closes move it
            let nxt = st.candles.next_close_ms(self.settings.grace_ms);
            if nxt >= 0 && (part.next_close < 0 || nxt < part.next_close) {
                part.next_close = nxt;
            }
            st.candles.started = st.candles.series.iter().all(|x| x.closed_until >= 0);
        }
        Ok(())
    }

    /// `_new_trade`: false if this provider already reported this trade id.
    fn new_trade(&self, st: &mut SymbolState, rec: &Raw, trade_id: &str) -> bool {
        let ident = format!("{}\x00{}", rec.provider, trade_id);
        if st.trade_ids.contains_key(&ident) {
            st.duplicates += 1;
            return false;
        }
        st.trade_ids.insert(ident, rec.event_time_ms);
        if st.trade_ids.len() > 64 {
            // forget what is older than the de-duplication horizon
            st.prune(st.newest_ms - self.settings.dedup_ms);
        }
        true
    }

    /// `_counted`: true unless another provider already reported the same (price, amount,
    /// time): the n-th such trade of this provider duplicates another provider's n-th.
    fn counted(&self, st: &mut SymbolState, rec: &Raw, amount: f64) -> bool {
        let t = rec.event_time_ms;
        let entry = st
            .trade_keys
            .entry(TradeKey::new(rec.price, amount, t))
            .or_insert_with(|| TradeCounts {
                price: rec.price,
                amount,
                time_ms: t,
                counts: IndexMap::new(),
            });
        let counts = &mut entry.counts;
        let n = counts.get(&rec.provider).copied().unwrap_or(0) + 1;
        counts.insert(rec.provider.clone(), n);
        if counts.iter().any(|(p, &c)| *p != rec.provider && c >= n) {
            st.duplicates += 1;
            return false;
        }
        true
    }

    fn price(
        &mut self,
        st: &mut SymbolState,
        rec: &Raw,
        partition: i64,
        oracle: &dyn Oracle,
    ) -> Res<()> {
        let params = ConsensusParams::with_stale_ms(self.settings.stale_for(&st.asset_type));
        let now = st.newest_ms;
        let provider = rec.provider.as_str();
        st.stats
            .entry(rec.provider.clone())
            .or_default()
            .on_tick(rec.event_time_ms, now);
        let copies = st.agreement.copies()?.clone();
        let quotes: Vec<Quote> = st.quotes.values().cloned().collect();
        let Some(result) = consensus(
            &quotes,
            now,
            &st.stats,
            st.volatility.per_ms(),
            &params,
            &copies,
        )?
        else {
            return Ok(());
        };
        let (price, band_low, band_high) = (result.price, result.band_low, result.band_high);
        let confidence = result.confidence;
        let key = st.symbol.as_bytes().to_vec();
        if !(0.0 < band_low
            && band_low <= price
            && price <= band_high
            && band_high < INF
            && (0.0..=1.0).contains(&confidence))
        {
            // only extreme inputs get here: a null or infinite band, or a NaN confidence
            self.invalid(
                st,
                partition,
                "PriceUpdate",
                "0 < band_low <= price <= band_high < inf and 0 <= confidence <= 1",
                &[
                    ("price", price),
                    ("band_low", band_low),
                    ("band_high", band_high),
                    ("confidence", confidence),
                ],
            );
            return Ok(());
        }
        learn(st, rec, &result, &copies)?;
        st.candles.on_price(rec.event_time_ms, price);
        // change and volume against the symbol's UTC day, and the provider nearest the consensus
        let day = st
            .candles
            .day(now)
            .or_else(|| st.candles.day(rec.event_time_ms));
        let day_open = day.map_or(price, |d| d.open);
        let day_volume = day.filter(|d| d.trades != 0).map(|d| d.volume);
        let change = price - day_open;
        let change_percent = div(change, day_open)? * 100.0;
        if !(-INF < change_percent && change_percent < INF) {
            self.invalid(
                st,
                partition,
                "PriceUpdate",
                "change_percent is not finite",
                &[("price", price), ("day_open", day_open)],
            );
            return Ok(());
        }
        let used = &result.used;
        let mut nearest = &used[0];
        let mut distance = INF;
        for p in used {
            // sorted by provider: ties go to the first name
            let d = (st.quotes[p.as_str()].price - price).abs();
            if d < distance {
                nearest = p;
                distance = d;
            }
        }
        let quote = self.consensus_quote(st, used, partition);
        let iso = iso_ms(now)?;
        // PriceUpdate's bytes, as `encode` writes them (records.rs)
        let record = PriceUpdate {
            symbol: &st.symbol,
            asset_type: &st.asset_type,
            price,
            confidence,
            band_low,
            band_high,
            used,
            rejected: &result.rejected,
            flags: &result.flags,
            event_time_ms: now,
            timestamp: &iso,
            provider: nearest,
            day_open,
            change,
            change_percent,
            volume: day_volume,
            bid: quote.as_ref().map(|q| q.0),
            ask: quote.as_ref().map(|q| q.1),
        };
        let to = Some(partition);
        self.emit(partition, "fiml.prices", &key, to, None, |out| {
            record.write_json(out)
        });
        if let Some(quote) = quote {
            if st.last_quote_ms < 0 || now - st.last_quote_ms >= self.settings.quote_ms {
                st.last_quote_ms = now;
                self.quote(st, quote, &key, partition, &iso);
            }
        }
        self.health(st, provider, params.stale_ms, oracle)?;
        // the others: one that has gone silent while this one ticks is down now
        let silent: Vec<String> = st
            .stats
            .iter()
            .filter(|(other, s)| {
                other.as_str() != provider
                    && s.last_state != "down"
                    && s.silent(now, params.stale_ms)
            })
            .map(|(other, _)| other.clone())
            .collect();
        for other in silent {
            self.health(st, &other, params.stale_ms, oracle)?;
        }
        Ok(())
    }

    fn invalid(
        &mut self,
        st: &SymbolState,
        partition: i64,
        model: &str,
        rule: &str,
        values: &[(&str, f64)],
    ) {
        self.invalid += 1;
        let offset = self.applying;
        let headers = deadletter_headers(
            &format!("invalid {model}: {rule} does not hold"),
            partition,
            offset,
        );
        let key = st.symbol.as_bytes();
        self.emit(
            partition,
            "fiml.deadletter",
            key,
            None,
            Some(headers),
            |out| invalid_body(out, &st.symbol, st.newest_ms, values),
        );
    }

    /// `Processor._consensus_quote`: the medians (lower middle) of the bids and asks of the
    /// providers used that quote both, and those providers; None if none does, or if the
    /// medians fail QuoteUpdate's rule (dead-lettered).
    fn consensus_quote(
        &mut self,
        st: &SymbolState,
        used: &[String],
        partition: i64,
    ) -> Option<(f64, f64, Vec<String>)> {
        let mut bids: Vec<f64> = Vec::new();
        let mut asks: Vec<f64> = Vec::new();
        let mut providers: Vec<String> = Vec::new();
        for p in used {
            // sorted by provider
            let q = &st.quotes[p.as_str()];
            if let (Some(b), Some(a)) = (q.bid, q.ask) {
                bids.push(b);
                asks.push(a);
                providers.push(p.clone());
            }
        }
        if bids.is_empty() {
            return None;
        }
        if bids.len() > 1 {
            // finite prices > 0: a total order, as Python's sort
            bids.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
            asks.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        }
        let (bid, ask) = (bids[(bids.len() - 1) / 2], asks[(asks.len() - 1) / 2]);
        if !(0.0 < bid && bid < INF && 0.0 < ask && ask < INF && ask - bid < INF) {
            self.invalid(
                st,
                partition,
                "QuoteUpdate",
                "0 < bid, ask < inf",
                &[("bid", bid), ("ask", ask)],
            );
            return None;
        }
        Some((bid, ask, providers))
    }

    /// `Processor._quote`: the `fiml.quotes` record of a consensus quote.
    fn quote(
        &mut self,
        st: &SymbolState,
        quote: (f64, f64, Vec<String>),
        key: &[u8],
        partition: i64,
        iso: &str,
    ) {
        let (bid, ask, providers) = quote;
        let record = QuoteUpdate {
            symbol: &st.symbol,
            bid,
            ask,
            providers: &providers,
            event_time_ms: st.newest_ms,
            timestamp: iso,
        };
        let to = Some(partition);
        self.emit(partition, "fiml.quotes", key, to, None, |out| {
            record.write_json(out)
        });
    }

    fn health(
        &mut self,
        st: &mut SymbolState,
        provider: &str,
        stale: i64,
        oracle: &dyn Oracle,
    ) -> Res<()> {
        let now = st.newest_ms;
        let symbol = st.symbol.as_str(); // a field beside `stats`: both borrowed at once
        let stats: &mut ProviderStats = st
            .stats
            .get_mut(provider)
            .ok_or_else(|| Raised::new("KeyError", format!("'{provider}'")))?;
        let reliability = stats.reliability(stale)?;
        let state = stats.state(now, stale, Some(reliability))?;
        if state == stats.last_state && now - stats.last_health_ms < self.settings.health_every_ms {
            return Ok(());
        }
        stats.last_state = state.to_owned();
        stats.last_health_ms = now;
        let record = ProviderHealth {
            provider,
            state,
            symbol,
            event_time_ms: now,
            reliability: py_min(py_max(reliability, 0.0), 1.0),
            error_bps: stats.error_bps(),
            staleness_ms: (now - stats.last_time_ms).max(0) as f64,
            ticks: stats.ticks,
            errors: stats.rejections,
        };
        if !record.valid() {
            let r = &record;
            let reason = oracle.health_error(
                r.provider,
                r.state,
                r.symbol,
                r.event_time_ms,
                r.reliability,
                r.error_bps,
                r.staleness_ms,
                r.ticks,
                r.errors,
            );
            return Err(raised_from_reason(reason));
        }
        // keyed per (provider, symbol), to the state's own partition field (as Python)
        let key = health_key(provider, symbol);
        self.emit(
            st.partition,
            "fiml.provider.health",
            &key,
            Some(0),
            None,
            |out| record.write_json(out),
        );
        Ok(())
    }

    fn candles(&mut self, records: Vec<CandleRecord>, st: &SymbolState, partition: i64) {
        for r in records {
            let (o, h, lo, c, v) = (r.open, r.high, r.low, r.close, r.volume);
            if !(0.0 < lo
                && lo <= py_min(o, c)
                && py_max(o, c) <= h
                && h < INF
                && (0.0..INF).contains(&v))
            {
                self.invalid(
                    st,
                    partition,
                    "OHLCVUpdate",
                    "0 < low <= open, close <= high < inf and 0 <= volume < inf",
                    &[
                        ("open", o),
                        ("high", h),
                        ("low", lo),
                        ("close", c),
                        ("volume", v),
                    ],
                );
                continue;
            }
            if r.end > MAX_EPOCH_MS {
                // the last windows of 9999 end in the year 10000
                self.invalid(
                    st,
                    partition,
                    "OHLCVUpdate",
                    "window_end_ms <= MAX_EPOCH_MS",
                    &[],
                );
                continue;
            }
            let (key, to) = (st.symbol.as_bytes(), Some(partition));
            self.emit(partition, "fiml.ohlcv", key, to, None, |out| {
                r.write_json(&st.symbol, out)
            });
        }
    }

    fn close_partition(&mut self, part: &mut Partition, partition: i64) {
        let grace = self.settings.grace_ms;
        let mut symbols: Vec<usize> = (0..part.symbols.len()).collect();
        // sorted: the same order on every replay
        symbols.sort_by(|&a, &b| {
            part.symbols
                .get_index(a)
                .unwrap()
                .0
                .cmp(part.symbols.get_index(b).unwrap().0)
        });
        for i in symbols {
            let watermark = part.watermark;
            let st = &mut part.symbols[i];
            let nxt = st.candles.next_close_ms(grace);
            if 0 <= nxt && nxt <= watermark {
                let records = st.candles.close(watermark, grace);
                self.candles(records, st, partition);
                mark_dirty(&mut self.dirty, partition, &st.symbol);
            }
        }
        refresh_next_close(part, grace);
    }
}

/// `self.dirty.setdefault(partition, set()).add(symbol)`, without allocating the symbol when
/// it is there already.
fn mark_dirty(dirty: &mut HashMap<i64, HashSet<String>>, partition: i64, symbol: &str) {
    let symbols = dirty.entry(partition).or_default();
    if !symbols.contains(symbol) {
        symbols.insert(symbol.to_owned());
    }
}

fn refresh_next_close(part: &mut Partition, grace: i64) {
    part.next_close = part
        .symbols
        .values()
        .map(|st| st.candles.next_close_ms(grace))
        .filter(|&n| n >= 0)
        .min()
        .unwrap_or(-1);
}

/// `_spread`: the provider's last bid and ask, for a trade.
fn spread(st: &SymbolState, provider: &str) -> (Option<f64>, Option<f64>) {
    st.quotes
        .get(provider)
        .map_or((None, None), |q| (q.bid, q.ask))
}

/// `encode(TradeUpdate(...))`, or the exception its validation raises (a `trade_id` of more
/// than 64 characters, once the provider is prefixed).
fn trade_update(
    st: &SymbolState,
    rec: &Raw,
    trade: &raw::Trade,
    oracle: &dyn Oracle,
) -> Res<Vec<u8>> {
    let trade_id = format!("{}:{}", rec.provider, trade.trade_id);
    let record = TradeUpdate {
        symbol: &st.symbol,
        trade_id: &trade_id,
        price: rec.price,
        amount: trade.amount,
        side: trade.side,
        provider: &rec.provider,
        event_time_ms: rec.event_time_ms,
    };
    if !record.valid() {
        let r = &record;
        let reason = oracle.trade_error(
            r.symbol,
            r.trade_id,
            r.price,
            r.amount,
            r.side,
            r.provider,
            r.event_time_ms,
        );
        return Err(raised_from_reason(reason));
    }
    Ok(record.to_json())
}

/// `_learn`: what this consensus teaches (exclusion hysteresis, noise, hidden lag, copies,
/// drift).
fn learn(st: &mut SymbolState, rec: &Raw, result: &ConsensusResult, copies: &CopySet) -> Res<()> {
    let missing = |p: &str| Raised::new("KeyError", format!("'{p}'"));
    for p in &result.used {
        st.stats
            .get_mut(p.as_str())
            .ok_or_else(|| missing(p))?
            .excluded = false;
    }
    for p in &result.rejected {
        st.stats
            .get_mut(p.as_str())
            .ok_or_else(|| missing(p))?
            .excluded = true;
    }
    let me = rec.provider.as_str();
    if result.rejected.iter().any(|p| p == me) {
        st.stats[me].rejections += 1;
    }
    let quote = st.quotes[me].clone();
    let drift = st.volatility.per_ms();
    if result.used.iter().any(|p| p == me) && quote.time_ms == rec.event_time_ms {
        st.stats[me].learn_white(quote.price, quote.time_ms)?;
        // its quote against the others' estimate of the truth it shows (its lag's time)
        let mut leave_out: BTreeSet<&str> = copies_of(me, copies);
        leave_out.insert(me);
        let leave_out: Vec<&str> = leave_out.into_iter().collect();
        let at = quote.news_ms() - st.stats[me].info_lag_ms;
        if let Some(others) = result.without(&leave_out, at)? {
            st.stats[me].learn(bps2(quote.price, others.price)?, others.error_var)?;
            let learner = st.lags.entry(me.to_owned()).or_default();
            if let Some(lag) = learner.observe(
                quote.time_ms,
                quote.price,
                others.price,
                others.stated_ms,
                drift,
            )? {
                st.stats[me].info_lag_ms = lag;
            }
        }
        let mine = st.stats[me].white_noise_var();
        let mut differences = Vec::with_capacity(result.quotes.len());
        for q in &result.quotes {
            if q.provider != me {
                let theirs = st
                    .stats
                    .get(q.provider.as_str())
                    .ok_or_else(|| missing(&q.provider))?
                    .white_noise_var();
                differences.push((
                    q.provider.as_str(),
                    q.time_ms,
                    bps2(quote.price, q.price)?,
                    mine + theirs,
                ));
            }
        }
        st.agreement.observe(me, differences)?;
    }
    st.volatility
        .observe(st.newest_ms, result.price, result.variance_bps2)
}
