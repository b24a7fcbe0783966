"""The hub's dispatch step, fed fake Kafka records: no broker, no network."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.channels import StreamSpec, route
from gateway.hub import Hub
from gateway.metrics import Metrics
from gateway.registry import Registry
from gateway.settings import GatewaySettings
from gateway.subscription import Subscription
from schemas.codec import encode
from schemas.errors import DecodeError
from schemas.protocol import StreamType
from schemas.records import AssetType, Interval, OHLCVUpdate, PriceUpdate, TradeUpdate
from schemas.topics import topic_name


@dataclass
class Msg:
    offset: int
    value: bytes


@dataclass
class Owner:
    woken: int = 0
    failures: list[BaseException] = field(default_factory=list)

    def wake(self) -> None:
        self.woken += 1

    def fail(self, exc: BaseException) -> None:
        self.failures.append(exc)


def price(symbol: str, value: float) -> bytes:
    return encode(
        PriceUpdate(
            symbol=symbol,
            asset_type=AssetType.CRYPTO,
            price=value,
            confidence=0.9,
            band_low=value,
            band_high=value,
            providers_used=["a"],
            event_time_ms=1,
            source_ticks=1,
            provider="a",
            day_open=value,
        )
    )


def trade(n: int) -> bytes:
    return encode(
        TradeUpdate(
            symbol="BTC/USDT",
            trade_id=str(n),
            price=1.0,
            amount=1.0,
            providers=["a"],
            event_time_ms=1,
        )
    )


def hub_with(spec: StreamSpec, mode: str, max_pending: int) -> tuple[Hub, Subscription, Owner]:
    registry = Registry()
    hub = Hub(GatewaySettings(bootstrap="unused:9"), registry, Metrics())
    hub._positions[spec.topic].append(0)  # partition 0 assigned
    sub = Subscription("s", spec, mode, 1.0, max_pending=max_pending)  # type: ignore[arg-type]
    owner = Owner()
    registry.add(sub, owner)
    return hub, sub, owner


def test_realtime_overflow_over_several_symbols_keeps_each_symbols_latest() -> None:
    spec = StreamSpec(StreamType.PRICE, "fiml.prices", ("BTC/USDT", "ETH/USDT"), "")
    hub, sub, owner = hub_with(spec, "realtime", max_pending=3)
    tp = TopicPartition(topic_name("fiml.prices"), 0)
    eth = price("ETH/USDT", 2.0)
    btc = [price("BTC/USDT", float(i)) for i in range(1, 6)]
    hub._dispatch(tp, [Msg(0, eth), *(Msg(i, b) for i, b in enumerate(btc, 1))], now=0.0)
    assert owner.woken == 1 and not owner.failures
    assert sub.take(0.0) == [eth, btc[-1]]
    assert sub.collect_counts() == (4, 1)


def test_trades_overflow_disconnects_the_client_instead_of_dropping() -> None:
    spec = StreamSpec(StreamType.TRADES, "fiml.trades", ("BTC/USDT",), "")
    hub, _, owner = hub_with(spec, "realtime", max_pending=2)
    tp = TopicPartition(topic_name("fiml.trades"), 0)
    hub._dispatch(tp, [Msg(i, trade(i)) for i in range(4)], now=0.0)
    assert len(owner.failures) == 1


# Any JSON value, and bytes that are not JSON at all: what a careless or hostile producer can
# write to a derived topic.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
poison = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: orjson.dumps(v)),
    st.fixed_dictionaries({"symbol": json_values, "interval": json_values}).map(orjson.dumps),
    st.fixed_dictionaries({"symbol": st.just("ETH/USDT"), "interval": json_values}).map(
        orjson.dumps
    ),
)


@settings(deadline=None, max_examples=300)
@given(
    bad=st.lists(poison, min_size=1, max_size=5),
    topic=st.sampled_from(["fiml.ohlcv", "fiml.prices"]),
)
def test_no_record_stops_the_hub(bad: list[bytes], topic: str) -> None:
    """Whatever bytes sit between two good records, the good ones reach the subscriber and the
    bad ones are skipped and counted (one record with an ``interval`` that is a list used to
    kill the hub for every client)."""
    if topic == "fiml.ohlcv":
        spec = StreamSpec(StreamType.OHLCV, topic, ("ETH/USDT",), "1m")
        good = [candle_bytes(10.0), candle_bytes(11.0)]
    else:
        spec = StreamSpec(StreamType.PRICE, topic, ("ETH/USDT",), "")
        good = [price("ETH/USDT", 10.0), price("ETH/USDT", 11.0)]
    hub, sub, owner = hub_with(spec, "realtime", max_pending=100)
    records = [good[0], *bad, good[1]]
    hub._dispatch(
        TopicPartition(topic_name(topic), 0), [Msg(i, r) for i, r in enumerate(records)], now=0.0
    )
    delivered = sub.take(0.0)
    assert delivered[0] == good[0] and delivered[-1] == good[1] and not owner.failures
    assert hub._metrics.decode_errors == sum(not routable(topic, r) for r in bad)
    assert hub.positions(topic) == (len(records),)  # every record was passed, none re-read


def routable(topic: str, payload: bytes) -> bool:
    try:
        route(topic, payload)
    except DecodeError:
        return False
    return True


def candle_bytes(close: float) -> bytes:
    return encode(
        OHLCVUpdate(
            symbol="ETH/USDT",
            interval=Interval.M1,
            window_start_ms=0,
            window_end_ms=60_000,
            open=close,
            high=close,
            low=close,
            close=close,
            volume=0.0,
            trade_count=0,
            rev=0,
            is_final=False,
            event_time_ms=1,
        )
    )
