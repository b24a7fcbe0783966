"""``fiml gateway``: serve the gateway with uvicorn (imported inside the command)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    import uvicorn

    from gateway.hub import Hub

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``gateway`` command to the top-level ``fiml`` app."""

    @app.command("gateway")
    def gateway(
        host: str = typer.Option("127.0.0.1", help="Address to listen on."),
        port: int = typer.Option(8000, help="Port to listen on."),
        bootstrap: str | None = typer.Option(
            None, help="Kafka address (default: KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)."
        ),
        heartbeat: float | None = typer.Option(None, help="Heartbeat interval, seconds."),
        deflate: bool = typer.Option(
            True, help="Offer per-message compression (each client still chooses)."
        ),
        log_level: str = typer.Option("info", help="uvicorn log level (warning: no access log)."),
    ) -> None:
        """Serve live, conflated, resumable streams and replay over WebSocket."""
        import uvicorn

        from gateway.app import create_app
        from gateway.server import uvicorn_options
        from gateway.settings import GatewaySettings

        overrides: dict[str, object] = {"host": host, "port": port}
        if bootstrap:
            overrides["bootstrap"] = bootstrap
        if heartbeat is not None:
            overrides["heartbeat_s"] = heartbeat
        settings = GatewaySettings.from_env(**overrides)
        app = create_app(settings)
        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, **uvicorn_options(settings, deflate)
        )
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            failed = runner.run(_serve(uvicorn.Server(config), app.state.gateway.hub))
        if failed:  # a supervisor (fiml up, systemd, compose) restarts us
            typer.echo(
                "fiml gateway: the Kafka hub died, so no live data was served; "
                "exiting (1) to be restarted.",
                err=True,
            )
            raise typer.Exit(1)


async def _serve(server: uvicorn.Server, hub: Hub) -> bool:
    """Serve until stopped (a signal) or until the hub fails; True if it failed."""

    async def stop_when_failed() -> None:
        await hub.failed.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stop_when_failed())
    try:
        await server.serve()
    finally:
        watcher.cancel()
    return hub.failed.is_set()
