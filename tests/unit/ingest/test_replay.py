from __future__ import annotations

from pathlib import Path

import pytest

from agents.ingest.base import Rejected
from agents.ingest.errors import ReplayFormatError
from agents.ingest.replay import ReplayProvider, read_rows
from schemas.records import ProviderHealth, RawTick, RawTrade
from tests.conftest import TEST_DATA

FIXTURES = Path(__file__).parent / "fixtures"
BINANCE = TEST_DATA / "binance-xrpeth-2019" / "XRP_ETH-trades.json.gz"


async def _collect(provider: ReplayProvider) -> list[object]:
    async with provider:
        return [event async for event in provider]


async def test_real_binance_trades_replay_with_original_times() -> None:
    events = await _collect(ReplayProvider(BINANCE, clock=lambda: 42))
    trades = [e for e in events if isinstance(e, RawTrade)]
    ticks = [e for e in events if isinstance(e, RawTick)]
    assert len(trades) == len(ticks) == 12_477
    assert trades[0].event_time_ms == 1570752011620  # 2019-10-11 00:00:11.620 UTC
    assert trades[-1].event_time_ms == 1570965568844  # 2019-10-13 11:19:28.844 UTC
    first = trades[0]
    assert (first.symbol, first.trade_id, first.price, first.amount, first.side) == (
        "XRP/ETH", "13519807", 0.00141342, 23.0, "sell",
    )  # fmt: skip
    assert ticks[0].price == first.price and ticks[0].event_time_ms == first.event_time_ms
    seqs = [e.seq for e in events if isinstance(e, RawTick | RawTrade)]
    assert seqs == list(range(len(seqs)))
    assert all(e.ingest_time_ms == 42 for e in trades)
    assert not [e for e in events if isinstance(e, Rejected)]
    assert isinstance(events[-1], ProviderHealth) and events[-1].state == "down"


async def test_csv_ticks_with_a_bad_row_going_to_dead_letters() -> None:
    events = await _collect(ReplayProvider(FIXTURES / "ticks.csv"))
    ticks = [e for e in events if isinstance(e, RawTick)]
    assert [(t.symbol, t.price) for t in ticks] == [
        ("BTC/USDT", 65000.5), ("ETH/USDT", 3200.25), ("AAPL", 190.1),
    ]  # fmt: skip
    assert ticks[0].bid == 65000.0 and ticks[1].bid is None
    (bad,) = [e for e in events if isinstance(e, Rejected)]
    assert "row 2" in bad.reason and bad.key == "BTC/USDT" and b"not-a-price" in bad.payload


async def test_jsonl_trades_symbol_filter_and_iso_times() -> None:
    events = await _collect(ReplayProvider(FIXTURES / "trades.jsonl", ["BTC/USDT"]))
    trades = [e for e in events if isinstance(e, RawTrade)]
    assert [t.trade_id for t in trades] == ["t1", "t2"]
    assert trades[1].event_time_ms == 1700000001000
    (bad,) = [e for e in events if isinstance(e, Rejected)]
    assert "BTC-USDT" in bad.reason  # not canonical: refused with the reason, not guessed


async def test_speed_paces_replay() -> None:
    import time

    started = time.monotonic()
    await _collect(ReplayProvider(FIXTURES / "trades.jsonl", speed=10.0))
    assert time.monotonic() - started >= 0.1  # 1 s of event time at 10x


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    path.write_bytes(b"")
    with pytest.raises(ReplayFormatError):
        list(read_rows(path))
