"""docker-compose.yml cannot run here (no Docker engine): check that it parses, that every
pipeline service runs a real ``fiml`` command with options the CLI accepts, and the wiring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from infra.cli import _register_optional, app

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ("topics", "ingest", "arbitrate", "gateway")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


@pytest.fixture(scope="module")
def cli() -> Any:
    _register_optional()
    return get_command(app)


def _parse(cli: Any, argv: list[str]) -> Any:
    """Resolve sub-commands and parse the options as ``fiml`` would, without running.

    Duck-typed: recent typer versions vendor their own copy of click.
    """
    command, args = cli, list(argv)
    while hasattr(command, "commands"):
        name = args.pop(0)
        assert name in command.commands, f"fiml has no command {name!r} ({' '.join(argv)})"
        command = command.commands[name]
    command.make_context(command.name or "", args)  # raises on an unknown option
    return command


def test_services(compose: dict[str, Any]) -> None:
    assert set(PIPELINE) | {"kafka"} <= set(compose["services"])


@pytest.mark.parametrize("service", PIPELINE)
def test_command_exists_with_its_options(compose: dict[str, Any], cli: Any, service: str) -> None:
    spec = compose["services"][service]
    assert spec["image"] == "fiml-stream:latest" and spec["build"] == "."
    assert spec["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
    _parse(cli, [str(a) for a in spec["command"]])


def test_order_and_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("ingest", "arbitrate", "gateway"):
        assert services[name]["depends_on"]["topics"]["condition"] == (
            "service_completed_successfully"
        )
    # published on loopback only: Kafka and the gateway are not on the network by default
    # (a range of host ports, so that --scale gateway=N can publish each replica)
    assert services["gateway"]["ports"] == ["127.0.0.1:8000-8003:8000"]
    assert services["kafka"]["ports"] == ["127.0.0.1:9092:9092"]
    assert services["proxy"]["ports"] == ["127.0.0.1:8080:8000"]
    assert services["proxy"]["profiles"] == ["ha"]
    config = (ROOT / services["proxy"]["volumes"][0].split(":")[0]).read_text()
    assert "option httpchk GET /health" in config and "timeout tunnel" in config
    assert "/health" in " ".join(services["gateway"]["healthcheck"]["test"])
    assert "ports" not in services["arbitrate"]  # scalable: --scale arbitrate=3


def test_dockerfile_builds_one_image_with_fiml_entrypoint() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert 'ENTRYPOINT ["fiml"]' in text
    assert "pip install" in text


def test_the_image_carries_the_compiled_arbitration_core() -> None:
    """The worker's default engine is the compiled core (FIML_ARB_ENGINE=compiled): an image
    without its wheel would stop every arbitration container on EngineUnavailableError."""
    text = (ROOT / "Dockerfile").read_text()
    assert "maturin build --release" in text and "native/arbcore/Cargo.toml" in text
    assert "COPY --from=arbcore /wheels /wheels" in text
    assert "/wheels/*.whl" in text.split("FROM python:3.11-slim", 1)[1]
    assert "native/arbcore/target" in (ROOT / ".dockerignore").read_text()
