"""The ``fiml`` command: one entry point for every part of FIML Stream.

Each part owns its sub-commands in its own ``cli`` module; this file only wires them together.
Those modules import their heavy dependencies (Faust, uvicorn, ccxt) inside the commands, so
``fiml --help`` and ``fiml kafka status`` start fast.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from infra.broker import BrokerConfig, LocalBroker, bootstrap_servers
from infra.errors import InfraError

__all__ = ["app", "main"]

app = typer.Typer(help="FIML Stream: real-time, confidence-scored market data on Kafka.")
kafka_app = typer.Typer(help="Run the local single-node Kafka broker (KRaft, no Docker).")
topics_app = typer.Typer(help="Provision and list FIML Stream's Kafka topics.")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")

console = Console()
err_console = Console(stderr=True)

PortOption = typer.Option(None, "--port", help="Broker port (default 9092 or FIML_KAFKA_PORT).")
ControllerOption = typer.Option(None, "--controller-port", help="KRaft controller port.")
DataDirOption = typer.Option(
    None, "--data-dir", help="Broker data directory (default .fiml/broker)."
)


def _broker(port: int | None, controller_port: int | None, data_dir: Path | None) -> LocalBroker:
    base = BrokerConfig()
    return LocalBroker(
        BrokerConfig(
            port=port or base.port,
            controller_port=controller_port or base.controller_port,
            data_dir=data_dir or base.data_dir,
        )
    )


def _fail(error: Exception) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {error}")
    return typer.Exit(1)


@kafka_app.command("start")
def kafka_start(
    port: int | None = PortOption,
    controller_port: int | None = ControllerOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Fetch the broker jars (once), then start the broker and wait until it answers."""
    broker = _broker(port, controller_port, data_dir)
    try:
        with console.status("Starting Kafka (the first run fetches the jars from Maven Central)"):
            status = broker.start()
    except InfraError as error:
        raise _fail(error) from None
    where = "external cluster" if status.external else f"pid {status.pid}"
    console.print(f"[green]Kafka {status.version} is up[/] at {status.address} ({where})")


@kafka_app.command("stop")
def kafka_stop(
    port: int | None = PortOption,
    controller_port: int | None = ControllerOption,
    data_dir: Path | None = DataDirOption,
    wipe: bool = typer.Option(False, "--wipe", help="Also delete the broker's data."),
) -> None:
    """Stop the broker this project started (and optionally delete its data)."""
    broker = _broker(port, controller_port, data_dir)
    stopped = broker.stop(wipe=wipe)
    console.print("Kafka stopped." if stopped else "Kafka was not running.")


@kafka_app.command("status")
def kafka_status(
    port: int | None = PortOption,
    controller_port: int | None = ControllerOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Say whether the broker is up, where, which version, and which topics it has."""
    status = _broker(port, controller_port, data_dir).status()
    state = "[green]up[/]" if status.up else "[red]down[/]"
    console.print(f"Kafka {status.version}: {state} at {status.address}")
    if status.pid is not None:
        console.print(f"pid {status.pid}")
    if status.up:
        console.print("topics: " + (", ".join(status.topics) or "(none)"))
    if not status.up:
        raise typer.Exit(1)


@kafka_app.command("logs")
def kafka_logs(
    lines: int = typer.Option(50, "-n", help="How many lines from the end."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Print the end of the local broker's log."""
    broker = _broker(None, None, data_dir)
    typer.echo(broker.log_tail(lines) or f"No log yet at {broker.config.log_file}.")


@topics_app.command("create")
def topics_create(
    bootstrap: str | None = typer.Option(None, help="Kafka address (default: local broker)."),
) -> None:
    """Create every registered topic that does not exist yet (safe to repeat)."""
    from infra.topics import create_topics

    address = bootstrap or bootstrap_servers(BrokerConfig().bootstrap)
    try:
        created = asyncio.run(create_topics(address))
    except Exception as error:  # the admin client raises many types; all mean "no cluster"
        raise _fail(
            InfraError(
                f"Could not reach Kafka at {address} ({type(error).__name__}): "
                "start it with `fiml kafka start` or set KAFKA_BOOTSTRAP_SERVERS."
            )
        ) from None
    console.print(f"Created {len(created)} topic(s): {', '.join(created) or 'all existed'}")


@topics_app.command("list")
def topics_list(
    bootstrap: str | None = typer.Option(None, help="Kafka address (default: local broker)."),
) -> None:
    """Show the registered topics and how each looks on the cluster."""
    from infra.topics import describe_topics
    from schemas.topics import TOPICS, topic_name

    address = bootstrap or bootstrap_servers(BrokerConfig().bootstrap)
    try:
        info = asyncio.run(describe_topics(address, [topic_name(t) for t in TOPICS]))
    except Exception as error:
        raise _fail(
            InfraError(
                f"Could not reach Kafka at {address} ({type(error).__name__}): "
                "start it with `fiml kafka start` or set KAFKA_BOOTSTRAP_SERVERS."
            )
        ) from None
    table = Table("topic", "key", "value", "partitions", "retention.ms", "cleanup", "on cluster")
    for logical, spec in TOPICS.items():
        found = info.get(topic_name(logical))
        table.add_row(
            topic_name(logical),
            spec.key,
            spec.value,
            str(spec.partitions),
            str(spec.retention_ms),
            spec.cleanup_policy,
            "[green]yes[/]" if found else "[red]missing[/]",
        )
    console.print(table)


_mounted = False


def _register_optional() -> None:
    """Mount the sub-commands that the other packages own (each in its own ``cli`` module).

    They are mounted on first use, not at import, so that ``infra.cli`` stays importable by
    the packages it mounts. Calling it again does nothing.
    """
    global _mounted
    if _mounted:
        return
    _mounted = True
    from agents.arbitration.cli import register as register_arbitration
    from agents.ingest.cli import register as register_ingest
    from gateway.cli import register as register_gateway
    from infra.up import register as register_up
    from schemas.cli import app as schemas_app

    app.add_typer(schemas_app, name="schemas")
    register_ingest(app)
    register_arbitration(app)
    register_gateway(app)
    register_up(app)


def main() -> None:
    _register_optional()
    app()


if __name__ == "__main__":
    main()
