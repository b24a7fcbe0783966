"""The hub's dispatch step, fed fake Kafka records: no broker, no network."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import TopicPartition

from gateway.channels import StreamSpec
from gateway.hub import Hub
from gateway.metrics import Metrics
from gateway.registry import Registry
from gateway.settings import GatewaySettings
from gateway.subscription import Subscription
from schemas.codec import encode
from schemas.protocol import StreamType
from schemas.records import AssetType, PriceUpdate, TradeUpdate
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
    return encode(PriceUpdate(
        symbol=symbol, asset_type=AssetType.CRYPTO, price=value, confidence=0.9,
        band_low=value, band_high=value, providers_used=["a"], event_time_ms=1, source_ticks=1,
        provider="a", day_open=value,
    ))


def trade(n: int) -> bytes:
    return encode(TradeUpdate(symbol="BTC/USDT", trade_id=str(n), price=1.0, amount=1.0,
                              providers=["a"], event_time_ms=1))


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
