"""Hypothesis strategies that build valid instances of every record and server message."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from schemas.protocol import (
    DataMessage,
    ErrorCode,
    ErrorMessage,
    Heartbeat,
    ReplayComplete,
    StreamType,
    SubscriptionAck,
    UnsubscribeAck,
    Welcome,
)
from schemas.records import (
    AssetType,
    Interval,
    OHLCVUpdate,
    PriceUpdate,
    ProviderHealth,
    QuoteUpdate,
    RawTick,
    RawTrade,
    TradeUpdate,
)
from schemas.times import MAX_EPOCH_MS

# Full float range: subnormals and huge values must survive JSON unchanged too.
prices = st.floats(min_value=0, exclude_min=True, allow_nan=False, allow_infinity=False)
sizes = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
times = st.integers(min_value=0, max_value=MAX_EPOCH_MS)
counts = st.integers(min_value=0, max_value=2**63 - 1)
names = st.text(min_size=1, max_size=64)
unit = st.floats(min_value=0, max_value=1)
sides = st.sampled_from(["buy", "sell", None])
name_lists = st.lists(names, max_size=5)


def _raw(**extra: Any) -> dict[str, Any]:
    return dict(
        provider=names,
        symbol=names,
        provider_symbol=names,
        asset_type=st.sampled_from(AssetType),
        market=st.none() | names,
        event_time_ms=times,
        ingest_time_ms=times,
        seq=counts,
        **extra,
    )


def _plain(cls: Any) -> Any:
    """``cls`` behind a plain function, so that ``st.builds`` infers no field: the seed's keys
    (``timestamp``, ``spread``, ``quantity`` ...) are derived by the model."""
    return lambda **fields: cls(**fields)


raw_ticks = st.builds(
    RawTick,
    **_raw(
        price=prices,
        bid=st.none() | prices,
        ask=st.none() | prices,
        bid_size=st.none() | sizes,
        ask_size=st.none() | sizes,
        volume=st.none() | sizes,
    ),
)
raw_trades = st.builds(RawTrade, **_raw(trade_id=names, price=prices, amount=sizes, side=sides))
provider_health = st.builds(
    ProviderHealth,
    provider=names,
    state=st.sampled_from(["up", "degraded", "down"]),
    reason=st.none() | st.text(),
    event_time_ms=times,
    reliability=st.none() | unit,
    error_bps=st.none() | sizes,
    staleness_ms=st.none() | sizes,
    ticks=st.none() | counts,
    errors=st.none() | counts,
)


@st.composite
def price_updates(draw: st.DrawFn) -> PriceUpdate:
    low, mid, high = sorted(draw(st.lists(prices, min_size=3, max_size=3)))
    used = draw(st.lists(names, min_size=1, max_size=5))
    return PriceUpdate(
        symbol=draw(names),
        asset_type=draw(st.sampled_from(AssetType)),
        price=mid,
        confidence=draw(unit),
        band_low=low,
        band_high=high,
        providers_used=used,
        providers_rejected=draw(name_lists),
        flags=draw(name_lists),
        event_time_ms=draw(times),
        source_ticks=draw(counts),
        provider=draw(st.sampled_from(used)),
        # within a factor of two: prices of one symbol in one day are never 1e300 apart
        day_open=mid if mid < 1e-300 else draw(st.floats(mid / 2, mid)),
        volume=draw(st.none() | sizes),
    )


quote_updates = st.builds(
    _plain(QuoteUpdate),
    symbol=names,
    bid=prices,
    ask=prices,
    bid_size=st.none() | sizes,
    ask_size=st.none() | sizes,
    providers=name_lists,
    event_time_ms=times,
)
trade_updates = st.builds(
    _plain(TradeUpdate),
    symbol=names,
    trade_id=names,
    price=prices,
    amount=sizes,
    side=sides,
    providers=name_lists,
    event_time_ms=times,
)


@st.composite
def ohlcv_updates(draw: st.DrawFn) -> OHLCVUpdate:
    interval = draw(st.sampled_from(Interval))
    start = draw(st.integers(0, MAX_EPOCH_MS // interval.ms - 1)) * interval.ms
    o, c, x, y = draw(st.lists(prices, min_size=4, max_size=4))
    return OHLCVUpdate(
        symbol=draw(names),
        interval=interval,
        window_start_ms=start,
        window_end_ms=start + interval.ms,
        open=o,
        high=max(o, c, x, y),
        low=min(o, c, x, y),
        close=c,
        volume=draw(sizes),
        trade_count=draw(counts),
        rev=draw(counts),
        is_final=draw(st.booleans()),
        event_time_ms=draw(times),
    )


RECORD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "RawTick": raw_ticks,
    "RawTrade": raw_trades,
    "ProviderHealth": provider_health,
    "PriceUpdate": price_updates(),
    "QuoteUpdate": quote_updates,
    "TradeUpdate": trade_updates,
    "OHLCVUpdate": ohlcv_updates(),
}

derived = price_updates() | quote_updates | trade_updates | ohlcv_updates()
stream_types = st.sampled_from(StreamType)

SERVER_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "SubscriptionAck": st.builds(
        _plain(SubscriptionAck),
        timestamp_ms=times,
        subscription_id=names,
        stream_type=stream_types,
        symbols=name_lists,
        interval_ms=st.integers(100, 60_000),
        mode=st.sampled_from(["conflated", "realtime"]),
        replay=st.booleans(),
        resumed_from=st.none() | counts,
    ),
    "UnsubscribeAck": st.builds(_plain(UnsubscribeAck), timestamp_ms=times, subscription_id=names),
    "DataMessage": st.builds(
        _plain(DataMessage),
        timestamp_ms=times,
        stream_type=stream_types,
        subscription_id=names,
        data=st.lists(derived, max_size=4),
        seq=counts,
    ),
    "Heartbeat": st.builds(_plain(Heartbeat), timestamp_ms=times, active_subscriptions=counts),
    "ErrorMessage": st.builds(
        _plain(ErrorMessage),
        timestamp_ms=times,
        error_code=st.sampled_from(ErrorCode),
        message=st.text(),
        field=st.none() | names,
        subscription_id=st.none() | names,
    ),
    "ReplayComplete": st.builds(
        _plain(ReplayComplete), timestamp_ms=times, subscription_id=names, records=counts
    ),
    "Welcome": st.builds(
        _plain(Welcome),
        timestamp_ms=times,
        authenticated=st.booleans(),
        principal=names,
        expires_at_ms=st.none() | times,
        limits=st.dictionaries(names, counts, max_size=4),
    ),
}
