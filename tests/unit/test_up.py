"""``fiml up``'s pure parts: the child command lines, the rate meter and the status line."""

from __future__ import annotations

from typer.main import get_command

from infra.cli import _register_optional, app
from infra.monitor import RateMeter, Snapshot
from infra.status_view import render, summary_line
from infra.supervisor import Child, ChildState
from infra.up import UpOptions, child_specs


def test_children_get_the_broker_and_options() -> None:
    opts = UpOptions(symbols="AAPL,BTC/USDT", providers="sim, ccxt:kraken", gateway_port=8123)
    specs = {s.name: s for s in child_specs(opts, "127.0.0.1:9999")}
    assert list(specs) == ["ingest", "arbitrate", "gateway"]
    ingest = specs["ingest"].argv
    assert ingest[ingest.index("--symbols") + 1] == "AAPL,BTC/USDT"
    assert [ingest[i + 1] for i, a in enumerate(ingest) if a == "--provider"] == [
        "sim",
        "ccxt:kraken",
    ]
    gateway = specs["gateway"].argv
    assert gateway[gateway.index("--port") + 1] == "8123"
    assert all(
        s.env and s.env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9999" for s in specs.values()
    )


def test_every_child_command_exists_in_the_cli() -> None:
    _register_optional()
    names = set(get_command(app).commands)  # type: ignore[attr-defined]
    for spec in child_specs(UpOptions(), "x:1"):
        sub = next(a for a in spec.argv if not a.startswith(("/", "-")) and " " not in a)
        assert sub in names, f"fiml {sub} is not a command"


def test_rate_meter() -> None:
    meter = RateMeter()
    assert meter.update(100, 10.0) == 0.0
    assert meter.update(150, 12.0) == 25.0
    assert meter.update(140, 13.0) == 0.0  # a reset topic never gives a negative rate


def test_status_renders_without_data() -> None:
    snap = Snapshot("127.0.0.1:9092", broker_up=True, prices_total=3, clients=None)
    children = [Child(spec=s, state=ChildState.BACKOFF) for s in child_specs(UpOptions(), "x")]
    line = summary_line(snap, children)
    assert "broker=up" in line and "clients=?" in line and "ingest=backoff" in line
    assert render(snap, children, "http://127.0.0.1:8000/") is not None


def test_a_second_fiml_up_on_a_port_in_use_says_so_and_starts_nothing() -> None:
    """Found running two `fiml up` at once: the second one's gateway restarted forever on
    "address already in use" and shared the first one's broker. It now stops at once."""
    import io
    import socket

    from rich.console import Console

    from infra.up import run_up

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = io.StringIO()
        code = run_up(UpOptions(gateway_port=port, headless=True), Console(file=out))
    assert code == 2
    assert f"port {port} on 127.0.0.1 is in use" in out.getvalue()
    assert "--gateway-port" in out.getvalue()
