"""Shared fixtures: one real Kafka broker for the whole session, and fresh topics per test.

The broker is, in order of preference: the cluster named by ``KAFKA_BOOTSTRAP_SERVERS``; a
testcontainers Kafka container if a Docker engine answers; else the project's own local broker
(``infra.broker``) on free ports in a temporary directory, stopped when the session ends.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.arbitration.engine import EngineUnavailableError
from infra.broker import BrokerConfig, LocalBroker
from infra.topics import ensure_topic

#: Recorded market data (real Binance trades and klines, ccxt responses): tests/data/README.md.
TEST_DATA = Path(__file__).resolve().parent / "data"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _docker_answers() -> bool:
    """True if a Docker engine answers on its socket (the client alone is not enough)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine: let testcontainers try it
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(host.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"OK" in sock.recv(1024)
    except OSError:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bootstrap address of a real Kafka broker, valid for the whole test session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    config = BrokerConfig(
        port=free_port(),
        controller_port=free_port(),
        data_dir=tmp_path_factory.mktemp("kafka"),
        heap="768m",
    )
    broker = LocalBroker(config)
    broker.start()
    try:
        yield config.bootstrap
    finally:
        broker.stop()


#: ``make_topic``: an async function, so that ``asyncio.run`` takes what it returns.
TopicFactory = Callable[..., Coroutine[Any, Any, str]]


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> TopicFactory:
    """Create a uniquely named topic so that tests never share state."""

    async def _make(prefix: str = "test", partitions: int = 1, **configs: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        await ensure_topic(kafka_bootstrap, name, partitions, dict(configs))
        return name

    return _make


@pytest.fixture
def topic_prefix(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh FIML_TOPIC_PREFIX: the whole registry under new names for this test."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("FIML_TOPIC_PREFIX", prefix)
    return prefix


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A test of the compiled engine is skipped on a machine that chose the Python reference
    (FIML_ARB_ENGINE=python, no compiler: `make setup` does not build the core there); anywhere
    else a missing core fails the test."""
    try:
        return (yield)
    except EngineUnavailableError:
        if os.environ.get("FIML_ARB_ENGINE") == "python":
            pytest.skip("the compiled core is not built (FIML_ARB_ENGINE=python)")
        raise
