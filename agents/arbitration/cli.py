"""``fiml arbitrate`` (run a worker) and ``fiml rebuild`` (not finished: see docs)."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the arbitration commands to the ``fiml`` CLI."""

    @app.command("arbitrate")
    def arbitrate(loglevel: str = typer.Option("warning", "--loglevel", "-l")) -> None:
        """Run an arbitration worker (the same as ``faust -A agents.arbitration.app worker``)."""
        import asyncio

        import uvloop
        from faust.worker import Worker

        from agents.arbitration.app import app as faust_app

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        Worker(faust_app, loglevel=loglevel).execute_from_commandline()
