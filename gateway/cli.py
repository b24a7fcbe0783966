"""``fiml gateway``: serve the gateway with uvicorn (imported inside the command), and
``fiml keys``: the gateway's API keys."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    import uvicorn

    from gateway.auth import KeyFile
    from gateway.hub import Hub

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``gateway`` and ``keys`` commands to the top-level ``fiml`` app."""
    app.add_typer(_keys_app(), name="keys")

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
        app = create_app(settings, freeze_gc=True)
        gw = app.state.gateway
        if gw.anonymous:
            typer.echo(f"fiml gateway: anonymous clients are allowed (listening on {host}).")
        else:
            typer.echo(
                f"fiml gateway: listening on {host}: clients need an API key or a JWT "
                "(fiml keys create; FIML_GATEWAY_ANONYMOUS=allow to let anyone in)."
            )
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


def _keys_app() -> typer.Typer:
    keys = typer.Typer(help="The gateway's API keys (stored hashed; shown once, at creation).")

    def key_file() -> KeyFile:
        from gateway.auth import KeyFile
        from gateway.service import keys_path
        from gateway.settings import GatewaySettings

        return KeyFile(keys_path(GatewaySettings.from_env()))

    @keys.command("create")
    def create(
        name: str = typer.Argument(..., help="Who or what the key is for."),
        streams: str = typer.Option(
            "", help="Stream types it may use, comma-separated (price,ohlcv,...); empty: all."
        ),
        symbols: str = typer.Option("*", help="Symbol patterns, comma-separated (BTC/*)."),
        replay: bool = typer.Option(True, help="May replay history."),
        replay_max_age_s: int | None = typer.Option(None, help="How far back, seconds."),
        raw: bool = typer.Option(False, help="May stream raw provider ticks."),
        admin: bool = typer.Option(False, help="May read /metrics, /docs, connection details."),
    ) -> None:
        """Create a key and print it (it is not stored, only its hash)."""
        from gateway.auth import Entitlements

        entitlements = Entitlements(
            streams=frozenset(s.strip() for s in streams.split(",") if s.strip()) or None,
            symbols=tuple(s.strip() for s in symbols.split(",") if s.strip()) or ("*",),
            replay=replay,
            replay_max_age_ms=None if replay_max_age_s is None else replay_max_age_s * 1000,
            raw=raw,
            admin=admin,
        )
        file = key_file()
        key, entry = file.create(name, entitlements)
        typer.echo(key)
        typer.echo(
            f"key {entry['id']} ({name}) saved in {file.path}; keep the key above: "
            "it is not shown again.",
            err=True,
        )

    @keys.command("list")
    def list_keys() -> None:
        """Every key: id, name, state and entitlements (never the key itself)."""
        for entry in key_file().entries().values():
            state = "revoked" if entry.get("revoked") else "active"
            typer.echo(
                f"{entry['id']}  {state:7}  {entry.get('name', '')}  {entry.get('entitlements')}"
            )

    @keys.command("revoke")
    def revoke(key_id: str = typer.Argument(..., help="The key's id (fiml keys list).")) -> None:
        """Revoke a key: new connections with it are refused (open ones keep running)."""
        if not key_file().revoke(key_id):
            typer.echo(f"no key {key_id}", err=True)
            raise typer.Exit(1)
        typer.echo(f"key {key_id} revoked")

    return keys


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
