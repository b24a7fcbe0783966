"""``fiml up``: the whole pipeline on one machine, supervised, with a live status screen.

Order: broker (started only if ``KAFKA_BOOTSTRAP_SERVERS`` is unset), topics, then the
simulator ingestion, the arbitration worker and the gateway as child processes in their own
process groups. Ctrl-C (or SIGTERM) stops the children (SIGTERM, then SIGKILL after a deadline)
and the broker if this command started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

import typer
from rich.console import Console
from rich.live import Live

from infra.broker import BrokerConfig, LocalBroker, external_bootstrap
from infra.errors import InfraError
from infra.procs import die_with_parent, fiml_argv, spawner
from infra.supervisor import ChildSpec, Event, Supervisor

__all__ = ["UpOptions", "child_specs", "register", "run_up"]

T = TypeVar("T")

# The demo's (agents.ingest.simconfig.DEFAULT_SYMBOLS), without importing the agents here.
DEFAULT_SYMBOLS = "AAPL,GOOGL,MSFT,TSLA,NVDA,BTC/USDT,ETH/USDT"


@dataclass(frozen=True)
class UpOptions:
    symbols: str = DEFAULT_SYMBOLS
    providers: str = "sim"
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    kafka_port: int | None = None
    fresh: bool = False
    keep_broker: bool = False
    headless: bool = False
    duration: float | None = None
    stop_timeout_s: float = 10.0
    log_dir: Path | None = None
    metrics_port: int | None = None  # ingestion's; arbitration's is the next one


def child_specs(opts: UpOptions, bootstrap: str) -> list[ChildSpec]:
    """The three children and their command lines (pure)."""
    # Every child reads the same variable, so an explicit --bootstrap is belt and braces.
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "PYTHONUNBUFFERED": "1"}
    providers = [p.strip() for p in opts.providers.split(",") if p.strip()]
    ingest = ["ingest", "--bootstrap", bootstrap, "--symbols", opts.symbols, "--quiet"]
    arbitrate = ["arbitrate"]
    if opts.metrics_port is not None:
        ingest += ["--metrics-port", str(opts.metrics_port)]
        arbitrate += ["--metrics-port", str(opts.metrics_port + 1)]
    for provider in providers:
        ingest += ["--provider", provider]
    gateway = ["gateway", "--host", opts.gateway_host, "--port", str(opts.gateway_port),
               "--bootstrap", bootstrap]  # fmt: skip
    return [
        ChildSpec("ingest", fiml_argv(*ingest), env),
        ChildSpec("arbitrate", fiml_argv(*arbitrate), env),
        # The dashboard shows the symbols being ingested.
        ChildSpec("gateway", fiml_argv(*gateway), {**env, "FIML_DASHBOARD_SYMBOLS": opts.symbols}),
    ]


def _broker_config(kafka_port: int | None) -> BrokerConfig:
    base = BrokerConfig()
    if kafka_port is None or kafka_port == base.port:
        return base
    # Another port gets its own data directory: two brokers must never share one.
    return BrokerConfig(
        port=kafka_port, controller_port=kafka_port + 1,
        data_dir=base.data_dir.with_name(f"broker-{kafka_port}"),
    )  # fmt: skip


class _Stop(Exception):
    """SIGTERM or SIGHUP (the terminal closed), turned into an exception like Ctrl-C's
    KeyboardInterrupt."""


#: The signals that stop ``fiml up`` cleanly, besides Ctrl-C's SIGINT.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _say(console: Console, text: str) -> None:
    """Print a shutdown line; once the terminal or the pipe we print to is gone (SIGHUP,
    ``| tee`` ended), print nowhere: a BrokenPipeError there would leave the children running."""
    try:
        console.print(text, highlight=False)
    except (OSError, ValueError):
        console.file = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the console


def _broker_guard(config: BrokerConfig) -> subprocess.Popen[bytes]:
    """A small process that stops the broker if ``fiml up`` dies without stopping it
    (SIGKILL): the broker is a daemon and would otherwise outlive it."""
    code = (
        "import signal; from infra.broker import BrokerConfig, LocalBroker; "
        "wanted = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}; "
        "signal.pthread_sigmask(signal.SIG_BLOCK, wanted); signal.sigwait(wanted); "
        f"LocalBroker(BrokerConfig(port={config.port}, "
        f"controller_port={config.controller_port}, data_dir={str(config.data_dir)!r}))"
        ".stop()"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )


def _in_use(host: str, port: int) -> bool:
    """Something listens on ``host:port`` (a port in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


class _Steps:
    """Start-up progress: a spinner per step on a terminal, plain lines otherwise."""

    def __init__(self, console: Console, headless: bool, t0: float) -> None:
        self.console, self.headless, self.t0 = console, headless, t0

    def run(self, label: str, action: Callable[[], T]) -> T:
        if self.headless:
            self.console.print(f"[up] {label} ...", highlight=False)
            result = action()
        else:
            with self.console.status(f"{label} ..."):
                result = action()
        self.done(label)
        return result

    def done(self, label: str) -> None:
        elapsed = time.monotonic() - self.t0
        self.console.print(f"[green]✓[/] {label} [dim]({elapsed:.1f} s)[/]", highlight=False)


def run_up(opts: UpOptions, console: Console | None = None) -> int:
    """Run the pipeline until Ctrl-C, SIGTERM or ``opts.duration``; return the exit code."""
    console = console or Console()
    if _in_use(opts.gateway_host, opts.gateway_port):
        # found running a second `fiml up` beside one: its gateway restarted forever on
        # "address already in use", and it shared the first one's broker
        console.print(
            f"[red]error:[/] port {opts.gateway_port} on {opts.gateway_host} is in use (another "
            "`fiml up` or gateway?): stop it, or pass --gateway-port N",
            highlight=False,
        )
        return 2
    t0 = time.monotonic()
    steps = _Steps(console, opts.headless, t0)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in _STOP_SIGNALS}
    broker: LocalBroker | None = None
    guard: subprocess.Popen[bytes] | None = None
    supervisor: Supervisor | None = None
    try:
        bootstrap = external_bootstrap()
        if bootstrap is None:
            broker = LocalBroker(_broker_config(opts.kafka_port))
            if opts.fresh:
                broker.stop(wipe=True)
                shutil.rmtree(broker.config.data_dir.with_name("arbitration"), ignore_errors=True)
            ours = broker.pid() is None  # only stop on exit a broker we started
            status = steps.run("Kafka broker (the first run fetches its jars)", broker.start)
            bootstrap = status.address
            broker = broker if ours else None
            if broker is not None and not opts.keep_broker:
                guard = _broker_guard(broker.config)
        elif opts.fresh:
            console.print("[yellow]--fresh ignored: KAFKA_BOOTSTRAP_SERVERS is an external "
                          "cluster[/]")  # fmt: skip
        from infra.topics import create_topics

        steps.run("topics", lambda: asyncio.run(create_topics(bootstrap)))
        log_dir = opts.log_dir or BrokerConfig().data_dir.with_name("logs")
        supervisor = Supervisor(child_specs(opts, bootstrap), spawner(log_dir))
        for event in supervisor.start():
            console.print(f"[green]✓[/] {event.child} started ({event.detail})", highlight=False)
        console.print(f"[dim]child logs: {log_dir}/<name>.log[/]", highlight=False)
        asyncio.run(_watch(opts, supervisor, bootstrap, console, t0))
        return 0
    except (KeyboardInterrupt, _Stop):
        return 0
    except BrokenPipeError:  # our stdout went away: stop as if asked to
        return 0
    except InfraError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False)
        return 1
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave children behind.
        for sig in (signal.SIGINT, *_STOP_SIGNALS):
            signal.signal(sig, signal.SIG_IGN)
        _say(console, "stopping ...")
        if supervisor is not None:
            killed = supervisor.stop(opts.stop_timeout_s)
            if killed:
                _say(
                    console,
                    f"[yellow]killed after {opts.stop_timeout_s:g} s:[/] " + ", ".join(killed),
                )
        if broker is not None and not opts.keep_broker:
            broker.stop()
        if guard is not None:  # its work is done
            guard.kill()
            guard.wait()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _say(console, "stopped.")


def _report(console: Console, events: list[Event]) -> None:
    style = {"exited": "yellow", "gave_up": "bold red", "started": "green"}
    for e in events:
        console.print(f"[{style.get(e.kind, '')}]{e.child} {e.kind}[/] {e.detail}",
                      highlight=False)  # fmt: skip


async def _gateway_ready(url: str) -> bool:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=1.0) as http:
            return bool((await http.get(f"{url}/health")).json().get("status") == "ok")
    except (httpx.HTTPError, ValueError):
        return False


async def _watch(
    opts: UpOptions, supervisor: Supervisor, bootstrap: str, console: Console, t0: float
) -> None:
    # Imported here: aiokafka and httpx would slow down every `fiml` command's start.
    from infra.monitor import Monitor
    from infra.status_view import render, summary_line

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, *_STOP_SIGNALS):
        loop.add_signal_handler(sig, stop.set)
    url = f"http://{opts.gateway_host}:{opts.gateway_port}"
    deadline = None if opts.duration is None else t0 + opts.duration
    async with Monitor(bootstrap, url) as monitor:
        baseline = (await monitor.sample()).prices_total
        gateway_up = first_price = False
        live = None if opts.headless else Live(console=console, refresh_per_second=2)
        last_line = 0.0
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                _report(live.console if live else console, supervisor.poll())
                snap = await monitor.sample()
                now = time.monotonic()
                if not gateway_up and await _gateway_ready(url):
                    gateway_up = True
                    console.print(f"[green]✓[/] gateway ready at {url}/ ({now - t0:.1f} s)",
                                  highlight=False)  # fmt: skip
                if not first_price and snap.prices_total > baseline:
                    first_price = True
                    console.print(f"[green]✓[/] first price after {now - t0:.1f} s",
                                  highlight=False)  # fmt: skip
                if gateway_up and first_price and live is not None and not live.is_started:
                    live.start()
                if live is not None and live.is_started:
                    live.update(render(snap, supervisor.children.values(), f"{url}/"))
                elif opts.headless and now - last_line >= 5.0:
                    console.print(summary_line(snap, supervisor.children.values()),
                                  highlight=False, soft_wrap=True)  # fmt: skip
                    last_line = now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
        finally:
            if live is not None and live.is_started:
                live.stop()
            for sig in (signal.SIGINT, *_STOP_SIGNALS):
                loop.remove_signal_handler(sig)


def register(app: typer.Typer) -> None:
    """Add ``up`` (and the client commands ``tail`` and ``replay``) to ``app``."""
    from infra.client_cli import register as register_clients

    register_clients(app)

    @app.command("up")
    def up(
        symbols: str = typer.Option(DEFAULT_SYMBOLS, help="Comma-separated canonical symbols."),
        providers: str = typer.Option("sim", help="Comma-separated providers (see fiml ingest)."),
        gateway_port: int = typer.Option(8000, help="Port of the gateway and dashboard."),
        kafka_port: int | None = typer.Option(None, help="Local broker port (default 9092)."),
        keep_data: bool = typer.Option(
            True, "--keep-data/--fresh", help="Keep the local broker's data, or wipe it first."
        ),
        keep_broker: bool = typer.Option(False, help="Leave the local broker running on exit."),
        headless: bool = typer.Option(
            False,
            "--headless",
            "--no-dashboard-screen",
            help="Plain log lines instead of the live screen (automatic without a terminal).",
        ),
        duration: float | None = typer.Option(None, help="Stop after this many seconds."),
        log_dir: Path | None = typer.Option(  # noqa: B008 - typer's declaration style
            None, help="Where the children's logs go (default .fiml/logs)."
        ),
        metrics_port: int | None = typer.Option(
            None,
            help="Serve ingestion's Prometheus metrics on this port and arbitration's on "
            "the next (the gateway's are at /metrics).",
        ),
    ) -> None:
        """Start broker, topics, ingestion, arbitration and gateway; Ctrl-C stops them all."""
        opts = UpOptions(
            symbols=symbols, providers=providers, gateway_port=gateway_port,
            kafka_port=kafka_port, fresh=not keep_data, keep_broker=keep_broker,
            headless=headless or not sys.stdout.isatty(), duration=duration, log_dir=log_dir,
            metrics_port=metrics_port,
        )  # fmt: skip
        raise typer.Exit(run_up(opts))
