"""``fiml tail`` (a WebSocket client of the gateway) and ``fiml replay`` (a range of a topic).

``tail`` is a client of the public protocol through ``fiml_stream``; ``replay`` reads Kafka directly
(offset-for-time lookup), so it works without a gateway and on any retained topic.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console

from infra.records_io import parse_time, write_csv, write_jsonl

__all__ = ["register"]

_PRICE_COLUMNS = ("symbol", "price", "change", "confidence", "band", "provider", "used",
                  "rejected", "flags", "time")  # fmt: skip
_OHLCV_COLUMNS = ("symbol", "interval", "window", "open", "high", "low", "close", "volume",
                  "rev", "closed")  # fmt: skip


def _hms(iso: str) -> str:
    """``HH:MM:SS.mmm`` of a record's ISO 8601 ``timestamp`` (UTC)."""
    return iso[11:23]


def _row(stream: str, r: dict[str, Any]) -> tuple[str, ...]:
    if stream == "price":
        return (
            r["symbol"], f"{r['price']:,.6g}", f"{r['change_percent']:+.2f}%",
            f"{r['confidence']:.2f}", f"{r['band_low']:,.6g} - {r['band_high']:,.6g}",
            r["provider"], ",".join(r["providers_used"]),
            ",".join(r.get("providers_rejected", [])), ",".join(r.get("flags", [])),
            _hms(r["timestamp"]),
        )  # fmt: skip
    if stream == "ohlcv":
        return (
            r["symbol"], r["interval"], _hms(r["timestamp"]), f"{r['open']:,.6g}",
            f"{r['high']:,.6g}", f"{r['low']:,.6g}", f"{r['close']:,.6g}",
            f"{r['volume']:,.4g}", str(r["rev"]), "yes" if r["is_closed"] else "",
        )  # fmt: skip
    return tuple(str(v) for v in r.values())


def _table(stream: str, latest: dict[tuple[str, str], dict[str, Any]]) -> Any:
    from rich.table import Table

    columns: tuple[str, ...] = {"price": _PRICE_COLUMNS, "ohlcv": _OHLCV_COLUMNS}.get(
        stream, tuple(next(iter(latest.values())).keys()) if latest else ("waiting",)
    )
    table = Table(*columns, title=f"fiml tail {stream}", header_style="bold")
    for key in sorted(latest):
        table.add_row(*_row(stream, latest[key]))
    return table


async def _tail(url: str, token: str | None, request: dict[str, Any], as_json: bool,
                count: int | None, duration: float | None) -> int:  # fmt: skip
    """Print ``request``'s records through ``fiml_stream`` (it reconnects and resumes if the
    gateway restarts); 1 if the gateway refuses the subscription or cannot be reached."""
    from rich.live import Live

    from fiml_stream import FimlStream, FimlStreamError

    stream = request.pop("stream_type")
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    seen = 0
    live = None if as_json else Live(_table(stream, latest), refresh_per_second=4)
    client = FimlStream(url, token=token, max_attempts=5)
    records = client.watch(stream, request.pop("symbols"), **request)
    if live is not None:
        live.start()
    try:
        async with asyncio.timeout(duration):
            async for record in records:
                seen += 1
                if as_json:
                    sys.stdout.write(orjson.dumps(record).decode() + "\n")
                    sys.stdout.flush()
                latest[(record.get("symbol", ""), record.get("interval", ""))] = record
                if live is not None:
                    live.update(_table(stream, latest))
                if count is not None and seen >= count:
                    break
    except TimeoutError:
        pass  # --duration reached
    except FimlStreamError as error:
        Console(stderr=True).print(f"[red]error[/] {error.message}")
        return 1
    finally:
        await records.aclose()
        if live is not None:
            live.stop()
    return 0


async def _replay(bootstrap: str, topic: str, start: int, end: int | None,
                  symbols: set[str], meta: bool) -> list[dict[str, Any]]:  # fmt: skip
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from infra.topics import describe_topics

    info = await describe_topics(bootstrap, [topic])
    if topic not in info:
        raise typer.BadParameter(f"topic {topic} does not exist on {bootstrap}")
    parts = [TopicPartition(topic, p) for p in range(info[topic].partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, client_id="fiml-replay",
                                isolation_level="read_committed")  # fmt: skip
    await consumer.start()
    rows: list[tuple[int, int, int, dict[str, Any]]] = []
    try:
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        found = await consumer.offsets_for_times({tp: start for tp in parts})
        stops = dict(ends)
        if end is not None:
            at_end = await consumer.offsets_for_times({tp: end for tp in parts})
            stops = {tp: (hit.offset if hit else ends[tp]) for tp, hit in at_end.items()}
        todo = set()
        for tp, hit in found.items():
            begin = hit.offset if hit is not None else ends[tp]
            if begin < stops[tp]:
                consumer.seek(tp, begin)
                todo.add(tp)
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=5000)
            if not batches:
                raise RuntimeError(f"no progress reading {topic} within 5 s")
            for tp, messages in batches.items():
                for m in messages:
                    if m.offset >= stops[tp]:
                        break
                    if symbols and (m.key or b"").decode() not in symbols:
                        continue
                    try:
                        value = orjson.loads(m.value)
                    except orjson.JSONDecodeError:
                        continue  # the dead-letter topic holds arbitrary bytes
                    row = value if isinstance(value, dict) else {"value": value}
                    if meta:
                        row = {"partition": m.partition, "offset": m.offset,
                               "timestamp_ms": m.timestamp, **row}  # fmt: skip
                    rows.append((m.timestamp, m.partition, m.offset, row))
            for tp in list(todo):
                if await consumer.position(tp) >= stops[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    rows.sort(key=lambda r: r[:3])  # time order across partitions; exact within one
    return [r[3] for r in rows]


def register(app: typer.Typer) -> None:
    """Add ``tail`` and ``replay`` to ``app``."""

    @app.command("tail")
    def tail(
        stream: str = typer.Argument(..., help="price | ohlcv | quote | trades | multi_asset"),
        symbols: str = typer.Argument(..., help="Comma-separated symbols: AAPL,BTC/USDT"),
        gateway: str = typer.Option("ws://127.0.0.1:8000", help="Gateway base URL."),
        interval_ms: int = typer.Option(1000, help="Conflation interval (100..60000)."),
        interval: str = typer.Option("1m", help="Candle interval for ohlcv: 1s, 1m, 5m, ..."),
        as_json: bool = typer.Option(False, "--json", help="One JSON record a line (pipes)."),
        count: int | None = typer.Option(None, help="Exit after this many records."),
        duration: float | None = typer.Option(None, help="Exit after this many seconds."),
        token: str | None = typer.Option(
            None, envvar="FIML_TOKEN", help="API key or JWT, where the gateway wants one."
        ),
    ) -> None:
        """Print live updates from the gateway as a refreshing table (or JSON Lines)."""
        request: dict[str, Any] = {
            "stream_type": stream, "mode": "conflated", "interval_ms": interval_ms,
            "symbols": [s.strip() for s in symbols.split(",") if s.strip()],
        }  # fmt: skip
        if stream == "ohlcv":
            request["params"] = {"interval": interval}
        try:
            code = asyncio.run(_tail(gateway, token, request, as_json, count, duration))
        except KeyboardInterrupt:
            code = 0
        raise typer.Exit(code)

    @app.command("replay")
    def replay(
        topic: str = typer.Argument("fiml.prices", help="Logical topic: fiml.prices, ..."),
        start: str = typer.Option("-15m", "--from", help="Epoch ms, ISO-8601 or -15m / -2h."),
        end: str | None = typer.Option(None, "--to", help="Exclusive end; default: now."),
        symbols: str = typer.Option("", help="Only these comma-separated symbols."),
        fmt: str = typer.Option("jsonl", "--format", help="jsonl | csv"),
        output: Path | None = typer.Option(  # noqa: B008 - typer's declaration style
            None, "--output", "-o", help="File (default stdout)."
        ),
        meta: bool = typer.Option(False, help="Add partition, offset and Kafka timestamp."),
        bootstrap: str | None = typer.Option(None, help="Kafka address (default: local broker)."),
    ) -> None:
        """Write the records of a topic in a time range as JSON Lines or CSV."""
        from infra.broker import BrokerConfig, bootstrap_servers
        from schemas.topics import TOPICS, topic_name

        if fmt not in ("jsonl", "csv"):
            raise typer.BadParameter("--format is jsonl or csv")
        now = time.time_ns() // 1_000_000
        try:
            first, last = parse_time(start, now), None if end is None else parse_time(end, now)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
        name = topic_name(topic) if topic in TOPICS else topic
        address = bootstrap or bootstrap_servers(BrokerConfig().bootstrap)
        wanted = {s.strip() for s in symbols.split(",") if s.strip()}
        rows = asyncio.run(_replay(address, name, first, last, wanted, meta))
        out = output.open("w", newline="") if output else sys.stdout
        try:
            written = (write_csv if fmt == "csv" else write_jsonl)(rows, out)
        finally:
            if output:
                out.close()
        Console(stderr=True).print(f"{written:,} records from {name}", highlight=False)
