"""Real-world check: Binance's XRP/ETH trades through the processor give Binance's own klines."""

from __future__ import annotations

import gzip
import json
from typing import Any

import orjson
import pytest

from agents.arbitration.core.processor import Output, Processor
from agents.arbitration.settings import ArbitrationSettings
from schemas.codec import encode
from schemas.records import AssetType, RawTrade
from tests.conftest import TEST_DATA

DATA = TEST_DATA / "binance-xrpeth-2019"


def binance_trades() -> list[RawTrade]:
    with gzip.open(DATA / "XRP_ETH-trades.json.gz") as fh:
        raw = json.load(fh)
    return [
        RawTrade(
            provider="binance",
            symbol="XRP/ETH",
            provider_symbol="XRPETH",
            asset_type=AssetType.CRYPTO,
            trade_id=str(t["info"]["a"]),
            price=float(t["info"]["p"]),
            amount=float(t["info"]["q"]),
            side="sell" if t["info"]["m"] else "buy",
            event_time_ms=int(t["info"]["T"]),
            ingest_time_ms=int(t["info"]["T"]),
            seq=i,
        )
        for i, t in enumerate(raw)
    ]


def finals_1m(outputs: list[Output]) -> dict[int, dict[str, Any]]:
    finals: dict[int, dict[str, Any]] = {}
    for topic, _k, value, _p, _h in outputs:
        if topic == "fiml.ohlcv":
            rec = orjson.loads(value)
            if rec["interval"] == "1m" and rec["is_final"]:
                assert rec["window_start_ms"] not in finals, "two finals for one window"
                finals[rec["window_start_ms"]] = rec
    return finals


def test_one_minute_candles_equal_binance_klines() -> None:
    trades = binance_trades()
    proc = Processor(ArbitrationSettings())
    outputs = []
    for offset, trade in enumerate(trades):
        proc.process(b"XRP/ETH", encode(trade), 0, offset)
        if offset % 500 == 0:  # like the worker: drain (and save the state) once per batch
            outputs.extend(proc.drain())
    # flush: a watermark far past the end closes every window
    last = trades[-1].model_copy(
        update={
            "event_time_ms": trades[-1].event_time_ms + 120_000,
            "trade_id": "flush",
            "amount": 0.0,
        }
    )
    proc.process(b"XRP/ETH", encode(last), 0, len(trades))
    outputs.extend(proc.drain())
    finals = finals_1m(outputs)
    klines = json.loads((DATA / "XRP_ETH-1m.json").read_text())
    last_minute = trades[-1].event_time_ms - trades[-1].event_time_ms % 60_000
    checked = 0
    for open_ms, o, h, low, c, v in klines:
        if open_ms == last_minute:
            continue  # Binance's last minute may be partial
        got = finals[open_ms]
        assert (got["open"], got["high"], got["low"], got["close"]) == (o, h, low, c), open_ms
        assert got["volume"] == pytest.approx(v, rel=1e-9, abs=1e-9), open_ms
        checked += 1
    assert checked == len(klines) - 1
    assert proc.poison == 0 and proc.late_ticks() == 0
