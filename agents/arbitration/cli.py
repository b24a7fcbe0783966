"""``fiml arbitrate`` (run a worker), ``fiml rebuild`` (replay the raw topics into fresh
derived topics) and ``fiml quality`` (the prices against the truth, issue 16)."""

from __future__ import annotations

from pathlib import Path

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
        import os

        if metrics_port is not None:  # read when the app module is imported, just below
            os.environ["FIML_ARB_METRICS_PORT"] = str(metrics_port)

        from agents.arbitration.app import app as faust_app
        from agents.arbitration.worker.faust_adapter import run

        run(faust_app, loglevel)

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

    @app.command("quality")
    def quality(
        png: str | None = typer.Option(
            None,
            "--png",
            help="write a reliability diagram per scenario, and reliability.png with all of "
            "them, into this directory",
        ),
        duration: float = typer.Option(300.0, help="seconds of event time per scenario"),
        only: str = typer.Option("", "--scenario", help="comma-separated names (default: all)"),
    ) -> None:
        """Run every quality scenario (issue 16) and print the consensus error against the
        truth, the best provider's, the inverse-variance bound, band coverage and calibration."""
        from agents.arbitration.quality import (
            evaluate,
            format_report,
            render_grid,
            render_reliability,
        )
        from agents.arbitration.quality import scenarios as all_scenarios

        names = {n.strip() for n in only.split(",") if n.strip()}
        chosen = [s for s in all_scenarios(int(duration * 1000)) if not names or s.name in names]
        if not chosen:
            raise typer.BadParameter(f"no scenario named {only!r}")
        reports = []
        for scenario in chosen:
            report = evaluate(scenario)
            reports.append(report)
            typer.echo(format_report(report))
            if png is not None:
                target = Path(png) / f"reliability-{scenario.name}.png"
                why = render_reliability(report, target)
                typer.echo(f"  {why}" if why else f"  wrote {target}")
        if png is not None and len(reports) > 1:
            target = Path(png) / "reliability.png"
            why = render_grid(reports, target)
            typer.echo(why or f"wrote {target}")
