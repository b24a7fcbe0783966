"""``fiml gateway``: serve the gateway with uvicorn (imported inside the command)."""

from __future__ import annotations

import typer

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
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_level=log_level,
            **uvicorn_options(settings, deflate),
        )
