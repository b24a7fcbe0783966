"""The replay provider: recorded ticks or trades from a file, with their original event times.

Formats (chosen by the file name; ``.gz`` is read through gzip in every case):

* ``*.json`` - a JSON list of ccxt trades (``fetch_trades`` output), like
  ``../shared/data/binance-xrpeth-2019/XRP_ETH-trades.json.gz``; also a list of tick objects;
* ``*.jsonl`` / ``*.ndjson`` - one JSON object per line;
* ``*.csv`` - a header line, then one row per record.

A row is a trade when it has an ``amount`` (ccxt) or ``size``/``qty``; otherwise a tick. Columns
understood: ``symbol``, ``price``, ``timestamp`` (ms) or ``event_time_ms`` or ``datetime``
(ISO 8601), ``id``/``trade_id``, ``side``, ``bid``, ``ask``, ``provider``.

Each trade gives a ``RawTrade`` **and** a ``RawTick`` at the trade price (same event time): the
arbitrated price is computed from ticks, so a trade-only recording would otherwise give the
arbitration nothing to work on; the trade itself still feeds volume through ``fiml.raw``.
A row that cannot be read becomes a ``Rejected`` event (dead letter), never a silent skip.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from agents.ingest.base import Clock, Event, Provider, ProviderState, Rejected, wall_clock_ms
from agents.ingest.errors import PayloadError, ReplayFormatError
from schemas import symbols as sym
from schemas.errors import SymbolError
from schemas.records import RawTick, RawTrade

__all__ = ["ReplayProvider", "read_rows", "row_event_time", "row_to_events"]


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return io.TextIOWrapper(path.open("rb"), encoding="utf-8")


def read_rows(path: Path) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """``(original bytes, row)`` for each record of ``path``, in file order.

    Raises:
        ReplayFormatError: unknown extension, or a file that is not what its name says.
    """
    name = path.name.removesuffix(".gz")
    with _open_text(path) as handle:
        if name.endswith(".json"):
            try:
                rows = orjson.loads(handle.read())
            except orjson.JSONDecodeError as error:
                raise ReplayFormatError(f"{path}: not JSON ({error})") from None
            if not isinstance(rows, list):
                raise ReplayFormatError(f"{path}: expected a JSON list of trades or ticks")
            for row in rows:
                yield orjson.dumps(row), row
        elif name.endswith((".jsonl", ".ndjson")):
            for line in handle:
                if line.strip():
                    raw = line.strip().encode()
                    try:
                        yield raw, orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        yield raw, {}
        elif name.endswith(".csv"):
            for row in csv.DictReader(handle):
                yield orjson.dumps(row), dict(row)
        else:
            raise ReplayFormatError(f"{path}: use .json, .jsonl, .ndjson or .csv (optionally .gz)")


def _float(row: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = row.get(key)
        if value not in (None, ""):
            return float(value)
    return None


def row_event_time(row: Mapping[str, Any]) -> int:
    """The row's event time in UTC epoch ms.

    Raises:
        PayloadError: no usable time field.
    """
    for key in ("timestamp", "event_time_ms", "time_ms", "T"):
        value = row.get(key)
        if value not in (None, ""):
            return int(float(value))
    if isinstance(row.get("info"), Mapping) and "T" in row["info"]:
        return int(row["info"]["T"])
    iso = row.get("datetime")
    if isinstance(iso, str) and iso:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
    raise PayloadError("no timestamp, event_time_ms or datetime field")


def row_to_events(
    row: Mapping[str, Any],
    *,
    provider: str,
    seq: int,
    ingest_time_ms: int,
    symbol: str | None = None,
) -> list[RawTick | RawTrade]:
    """The records of one replayed row: ``[RawTick]``, or ``[RawTrade, RawTick]`` for a trade.

    ``seq`` is the first sequence number to use (a trade uses ``seq`` and ``seq + 1``).

    Raises:
        PayloadError: a missing or invalid field, or a non-canonical symbol.
    """
    try:
        canonical = sym.normalize(symbol or str(row.get("symbol") or ""))
        kind = sym.classify(canonical)
        price = _float(row, "price", "p", "last")
        if price is None:
            raise PayloadError("no price")
        event_ms = row_event_time(row)
        name = str(row.get("provider") or provider)
        source_symbol = str(row.get("provider_symbol") or row.get("symbol") or canonical)
        amount = _float(row, "amount", "size", "qty", "q")
        out: list[RawTick | RawTrade] = []
        if amount is not None:
            side = row.get("side")
            out.append(
                RawTrade(
                    provider=name, symbol=canonical, provider_symbol=source_symbol,
                    asset_type=kind, trade_id=str(row.get("id") or row.get("trade_id") or seq),
                    price=price, amount=amount, side=side if side in ("buy", "sell") else None,
                    event_time_ms=event_ms, ingest_time_ms=ingest_time_ms, seq=seq,
                    history=True,  # recorded: exempt from the live age bound
                )
            )  # fmt: skip
            seq += 1
        out.append(
            RawTick(
                provider=name, symbol=canonical, provider_symbol=source_symbol, asset_type=kind,
                price=price, bid=_float(row, "bid"), ask=_float(row, "ask"),
                volume=_float(row, "volume"), event_time_ms=event_ms,
                ingest_time_ms=ingest_time_ms, seq=seq, history=True,
            )
        )  # fmt: skip
        return out
    except (ValueError, TypeError, SymbolError, ValidationError) as error:
        raise PayloadError(f"{type(error).__name__}: {error}") from None


class ReplayProvider(Provider):
    """Emits a recorded file's records once, in file order, then ends.

    Args:
        path: the recording (see the module docstring for the formats).
        symbols: keep only these canonical symbols (empty: keep everything).
        speed: 0 = as fast as the consumer takes them; x = event time runs x times the wall
            clock (gaps between trades are kept, scaled).
        symbol: the symbol of every row, for files without a ``symbol`` column.
    """

    lossless = True

    def __init__(
        self,
        path: Path | str,
        symbols: Sequence[str] = (),
        *,
        speed: float = 0.0,
        name: str = "replay",
        symbol: str | None = None,
        clock: Clock = wall_clock_ms,
    ) -> None:
        super().__init__(name, symbols, clock)
        self.path = Path(path)
        self.speed = speed
        self.symbol = symbol
        self._wanted = {sym.normalize(s) for s in symbols}

    async def _open(self) -> None:
        if not self.path.is_file():
            raise ReplayFormatError(f"{self.path}: no such file")

    async def _produce(self) -> AsyncIterator[Event]:
        health = self.transition(ProviderState.UP, f"replaying {self.path.name}")
        if health is not None:
            yield health
        first_event: int | None = None
        wall0 = time.monotonic()
        for count, (raw, row) in enumerate(read_rows(self.path)):
            try:
                events = row_to_events(
                    row, provider=self.name, seq=self._seq, ingest_time_ms=self.clock(),
                    symbol=self.symbol,
                )  # fmt: skip
            except PayloadError as error:
                yield Rejected(self.name, raw, f"replay row {count}: {error}", row.get("symbol"))
                continue
            if self._wanted and events[0].symbol not in self._wanted:
                continue
            self._seq += len(events)
            if self.speed > 0:
                event_ms = events[0].event_time_ms
                first_event = event_ms if first_event is None else first_event
                delay = wall0 + (event_ms - first_event) / 1000.0 / self.speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif count % 256 == 0:
                await asyncio.sleep(0)  # let the producer's sender run between bursts
            for event in events:
                yield event
        done = self.transition(ProviderState.DOWN, f"replay of {self.path.name} finished")
        if done is not None:
            yield done
