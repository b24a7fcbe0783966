"""``fiml arbitrate`` (run a worker) and ``fiml rebuild`` (replay the raw topics into fresh
derived topics)."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the arbitration commands to the ``fiml`` CLI."""

    @app.command("arbitrate")
    def arbitrate(
        loglevel: str = typer.Option("warning", "--loglevel", "-l"),
        metrics_port: int | None = typer.Option(
            None, help="Serve Prometheus metrics on this port (FIML_ARB_METRICS_PORT)."
        ),
    ) -> None:
        """Run an arbitration worker (the same as ``faust -A agents.arbitration.app worker``)."""
        import asyncio
        import os

        if metrics_port is not None:  # read when the app module is imported, just below
            os.environ["FIML_ARB_METRICS_PORT"] = str(metrics_port)

        import uvloop
        from faust.worker import Worker

        from agents.arbitration.app import app as faust_app

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        Worker(faust_app, loglevel=loglevel).execute_from_commandline()

    @app.command("rebuild")
    def rebuild(
        target_prefix: str = typer.Option(..., "--prefix", help="prefix of the new topics"),
        source_prefix: str | None = typer.Option(
            None, "--from", help="prefix of the raw topics (default FIML_TOPIC_PREFIX)"
        ),
        timeout: float = typer.Option(3600.0, help="seconds to wait for the catch-up"),
    ) -> None:
        """Replay fiml.raw from offset 0 into fresh derived topics under a new prefix."""
        import asyncio
        import os

        from agents.arbitration.rebuild import rebuild as run

        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        source = os.environ.get("FIML_TOPIC_PREFIX", "") if source_prefix is None else source_prefix
        report = asyncio.run(run(bootstrap, source, target_prefix, timeout_s=timeout))
        typer.echo(
            f"rebuilt {source or '(no prefix)'} -> {target_prefix} "
            f"(app id {report.app_id}) in {report.seconds:.1f} s"
        )
        for name, n in {**report.raw, **report.derived}.items():
            typer.echo(f"  {name:40s} {n:>10d}")
