"""``fiml tail`` (a WebSocket client of the gateway) and ``fiml replay`` (a range of a topic).

``tail`` is a client of the public protocol through ``fiml_stream``; ``replay`` reads Kafka directly
(offset-for-time lookup), so it works without a gateway and on any retained topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console

from infra.records_io import parse_time

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


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """aiokafka's log lines off: ``fiml replay`` reports each failure as one sentence, which
    they would only repeat (connection refused, retries)."""
    log = logging.getLogger("aiokafka")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


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
        fmt: str = typer.Option("jsonl", "--format", help="jsonl | csv | parquet"),
        output: Path | None = typer.Option(  # noqa: B008 - typer's declaration style
            None, "--output", "-o", help="File (default stdout; parquet needs a file)."
        ),
        meta: bool = typer.Option(False, help="Add partition, offset and Kafka timestamp."),
        bootstrap: str | None = typer.Option(None, help="Kafka address (default: local broker)."),
    ) -> None:
        """Write the records of a topic in a time range as JSON Lines, CSV or Parquet.

        Streams: memory stays at a few chunks of records however long the range. Order is
        exact within a partition, approximately time order across partitions
        (docs/PERFORMANCE.md, "fiml replay: topic to file").
        """
        from infra.broker import BrokerConfig, bootstrap_servers
        from infra.errors import InfraError
        from infra.export import FORMATS, TopicMissingError, export_range, topic_models
        from infra.export_progress import RangeProgress
        from schemas.topics import TOPICS, topic_name

        if fmt not in FORMATS:
            raise typer.BadParameter("--format is jsonl, csv or parquet")
        if fmt == "parquet" and output is None:
            raise typer.BadParameter("parquet needs a file: add -o FILE.parquet")
        now = time.time_ns() // 1_000_000
        try:
            first, last = parse_time(start, now), None if end is None else parse_time(end, now)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
        name = topic_name(topic) if topic in TOPICS else topic
        # a registry topic given by its full name is still one (its columns, its fast path)
        logical = next((t for t in TOPICS if topic_name(t) == name), topic)
        address = bootstrap or bootstrap_servers(BrokerConfig().bootstrap)
        wanted = frozenset(s.strip() for s in symbols.split(",") if s.strip())
        err = Console(stderr=True, highlight=False)
        progress = RangeProgress(topic, sys.stderr.isatty(), console=err)
        out = output.open("wb") if output else sys.stdout.buffer
        request = export_range(address, name, first, last, out, fmt, models=topic_models(logical),
                               symbols=wanted, meta=meta, progress=progress)  # fmt: skip
        try:
            with _quiet_aiokafka():
                result = asyncio.run(request)
        except TopicMissingError as error:
            raise typer.BadParameter(str(error)) from None
        except InfraError as error:
            err.print(f"[bold red]error:[/] {error}")
            raise typer.Exit(1) from None
        except BrokenPipeError:  # the reader of stdout left (| head): stop quietly, as cat does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        finally:
            progress.close()
            if output:
                out.close()
        err.print(f"{result.written:,} records from {name}")
        left_out = {
            "not JSON, or no value": result.not_json,
            "not fitting the columns": result.unfit,
        }
        for why, count in left_out.items():
            if count:
                err.print(f"{count:,} records left out: {why}")
        if result.extra_keys:
            keys = ", ".join(sorted(result.extra_keys))
            err.print(f"keys left out (not among the columns): {keys}")
