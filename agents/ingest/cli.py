"""``fiml ingest``: run one or more providers into Kafka with a live status line.

``register(app)`` adds the command to the ``fiml`` Typer app. Heavy dependencies (aiokafka,
ccxt, yfinance) are imported inside the command, so ``fiml --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from agents.ingest import simconfig

if TYPE_CHECKING:
    from agents.ingest.base import Provider
    from agents.ingest.runner import IngestRunner

__all__ = ["PROVIDER_SPECS", "build_provider", "register"]

DEFAULT_SYMBOLS = ",".join(simconfig.DEFAULT_SYMBOLS)
PROVIDER_SPECS = "sim, ccxt:<exchange>, yfinance, alphavantage, fmp or replay:<file>"
_TAKES_ARGUMENT = {"ccxt": "an exchange id (ccxt:binance)", "replay": "a file (replay:<file>)"}
_NO_ARGUMENT = {"sim", "yfinance", "alphavantage", "fmp"}


def build_provider(
    spec: str,
    symbols: Sequence[str],
    *,
    seed: int = 0,
    rate: float = 1.0,
    speed: float = 1.0,
    max_ticks: int | None = None,
) -> Provider:
    """The provider named by ``spec``: ``sim``, ``ccxt:<exchange>``, ``yfinance``,
    ``alphavantage``, ``fmp`` or ``replay:<file>``.

    Raises:
        typer.BadParameter: an unknown spec, a missing or unexpected ``:<argument>``, an
            exchange ccxt does not know, a replay file that does not exist.
        ProviderError: a provider that cannot be configured (no API key).
        ValueError: (``SymbolError``) a symbol the provider cannot serve.
    """
    from agents.ingest.base import wall_clock_ms

    kind, colon, arg = spec.partition(":")
    if kind in _TAKES_ARGUMENT and not arg:
        raise typer.BadParameter(f"{spec!r}: {kind} needs {_TAKES_ARGUMENT[kind]}")
    if kind in _NO_ARGUMENT and colon:
        raise typer.BadParameter(f"{spec!r}: {kind} takes no ':<argument>'")
    if kind == "sim":
        from agents.ingest.simconfig import SimConfig
        from agents.ingest.simulator import SimulatorProvider

        # Start the simulated event time at "now" so that a live demo shows current times.
        start = wall_clock_ms()
        config = SimConfig(symbols=tuple(symbols), seed=seed, start_ms=start - start % 1000)
        return SimulatorProvider(config.scaled(rate), speed=speed, max_ticks=max_ticks)
    if kind == "ccxt":
        import ccxt

        from agents.ingest.ccxt_adapter import CcxtProvider

        if arg not in ccxt.exchanges:
            raise typer.BadParameter(f"{spec!r}: ccxt has no exchange {arg!r}")
        return CcxtProvider(arg, symbols)
    if kind == "yfinance":
        from agents.ingest.yfinance_adapter import YFinanceProvider

        return YFinanceProvider(symbols)
    if kind == "alphavantage":
        from agents.ingest.alphavantage import AlphaVantageProvider

        return AlphaVantageProvider(symbols)
    if kind == "fmp":
        from agents.ingest.fmp import FmpProvider

        return FmpProvider(symbols)
    if kind == "replay":
        from agents.ingest.replay import ReplayProvider

        if not Path(arg).is_file():
            raise typer.BadParameter(f"{spec!r}: no such replay file {arg!r}")
        replay_speed = 0.0 if speed == 1.0 and max_ticks is None else speed
        wanted = [] if list(symbols) == ["*"] else symbols
        return ReplayProvider(arg, wanted, speed=replay_speed)
    raise typer.BadParameter(f"unknown provider {spec!r}: use {PROVIDER_SPECS}")


def _status_table(runner: IngestRunner, started: float) -> object:
    from rich.table import Table

    stats = runner.producer.stats
    table = Table(box=None, show_header=True, header_style="bold")
    for column in ("provider", "state", "events/s", "events", "errors", "reason"):
        table.add_column(column)
    colour = {"up": "green", "degraded": "yellow", "down": "red"}
    for status in runner.status():
        table.add_row(
            status.name, f"[{colour.get(status.state, 'white')}]{status.state}[/]",
            f"{status.rate:,.0f}", f"{status.events:,}", str(status.errors),
            (status.reason or "")[:80],
        )  # fmt: skip
    elapsed = time.monotonic() - started
    table.caption = (
        f"kafka: sent {stats.sent:,} ({stats.sent / max(elapsed, 1e-9):,.0f}/s)  "
        f"queued {runner.producer.queued:,}  dropped {stats.dropped:,}  "
        f"deadlettered {stats.deadlettered:,}  failed {stats.failed:,}  "
        f"reconnects {stats.reconnects:,}"
    )
    return table


async def _run(
    providers: list[Provider],
    bootstrap: str,
    duration: float | None,
    quiet: bool,
    kafka_timeout: float = 300.0,
    metrics_port: int | None = None,
) -> None:
    from rich.console import Console
    from rich.live import Live

    from agents.ingest.producer import IngestProducer
    from agents.ingest.runner import IngestRunner
    from infra.topics import create_topics

    await create_topics(bootstrap)  # safe to repeat: creates only what is missing
    console = Console(stderr=True)
    started = time.monotonic()
    timeout_ms = int(kafka_timeout * 1000)
    # SIGTERM (a supervisor, docker stop) and SIGINT (Ctrl-C) stop the providers, then the
    # buffer is drained into Kafka and the counts printed: a stop loses nothing it can send.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.ensure_future(stop.wait())
    async with IngestProducer(bootstrap, request_timeout_ms=timeout_ms) as producer:
        runner = IngestRunner(producer, providers)
        if metrics_port is not None:
            from agents.metrics import serve

            serve(metrics_port, runner.readings)
        runner.start()
        waiter = asyncio.ensure_future(runner.wait())
        try:
            with Live(console=console, refresh_per_second=2, transient=quiet) as live:
                while not waiter.done() and not stop.is_set():
                    if duration is not None and time.monotonic() - started >= duration:
                        break
                    await asyncio.wait(
                        {waiter, stopper}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                    )
                    runner.report_losses()
                    live.update(_status_table(runner, started))  # type: ignore[arg-type]
        finally:
            await runner.stop()
            for task in (waiter, stopper):
                task.cancel()
            await asyncio.gather(waiter, stopper, return_exceptions=True)
            await producer.flush()
        elapsed = time.monotonic() - started
    ticks = sum(p.ticks for p in providers)
    stats = producer.stats
    console.print(
        f"{'stopped: ' if stop.is_set() else ''}{ticks:,} ticks and "
        f"{sum(p.trades for p in providers):,} trades in {elapsed:.1f} s "
        f"= {ticks / elapsed:,.0f} ticks/s; records sent {stats.sent:,}, dead-lettered "
        f"{stats.deadlettered:,}, dropped {stats.dropped:,}, failed {stats.failed:,}",
        soft_wrap=True,  # one line, for logs and scripts
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)


def register(app: typer.Typer) -> None:
    """Add the ``ingest`` command to ``app``."""

    @app.command("ingest")
    def ingest(
        provider: list[str] = typer.Option(  # noqa: B008 - typer's declaration style
            ["sim"],
            "--provider",
            "-p",
            help="sim | ccxt:<exchange> | yfinance | alphavantage | fmp | replay:<file>; repeat "
            "for several providers in one process.",
        ),
        symbols: str = typer.Option(DEFAULT_SYMBOLS, help="Comma-separated canonical symbols."),
        bootstrap: str | None = typer.Option(None, help="Kafka address (default: local broker)."),
        seed: int = typer.Option(0, help="Simulator seed (same seed, same records)."),
        rate: float = typer.Option(1.0, help="Simulator: multiply every provider's tick rate."),
        speed: float = typer.Option(
            1.0, help="Simulator/replay: event time per wall time; 0 = as fast as possible."
        ),
        duration: float | None = typer.Option(None, help="Stop after this many seconds."),
        max_ticks: int | None = typer.Option(None, help="Simulator: stop after this many ticks."),
        quiet: bool = typer.Option(False, help="Clear the status display at the end."),
        kafka_timeout: float = typer.Option(
            300.0,
            help="Seconds aiokafka keeps retrying a record (a broker outage shorter than this "
            "loses nothing) before it is counted as failed.",
        ),
        metrics_port: int | None = typer.Option(
            None,
            envvar="FIML_INGEST_METRICS_PORT",
            help="Serve Prometheus metrics on this port (http://127.0.0.1:PORT/metrics).",
        ),
    ) -> None:
        """Run providers into fiml.raw / fiml.provider.health."""
        from infra.broker import BrokerConfig, bootstrap_servers

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        wanted = [s.strip() for s in symbols.split(",") if s.strip()]
        try:
            providers = [
                build_provider(spec, wanted, seed=seed, rate=rate, speed=speed, max_ticks=max_ticks)
                for spec in provider
            ]
        except Exception as error:  # SymbolError, ProviderError, BadParameter: say it, exit 2
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        address = bootstrap or bootstrap_servers(BrokerConfig().bootstrap)
        try:
            asyncio.run(_run(providers, address, duration, quiet, kafka_timeout, metrics_port))
        except KeyboardInterrupt:
            pass
        except OSError as error:
            typer.echo(f"error: Kafka at {address}: {error}", err=True)
            raise typer.Exit(1) from None
