"""``fiml replay``'s refusals, each one plain sentence (no broker needed)."""

from __future__ import annotations

import socket

import typer
from typer.testing import CliRunner

from infra.client_cli import register


def replay(*args: str) -> tuple[int, str]:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["replay", *args])
    return result.exit_code, result.stderr


def test_parquet_needs_a_file() -> None:
    code, err = replay("fiml.prices", "--format", "parquet")
    assert code == 2 and "parquet needs a file: add -o FILE.parquet" in err


def test_an_unknown_format_is_refused() -> None:
    code, err = replay("fiml.prices", "--format", "xlsx")
    assert code == 2 and "--format is jsonl, csv or parquet" in err


def test_no_broker_is_one_sentence() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    code, err = replay("fiml.prices", "--bootstrap", address)
    assert code == 1
    assert [" ".join(err.split())] == [
        f"error: no Kafka broker answers at {address}: start one (fiml kafka start) or pass "
        "--bootstrap"
    ]
