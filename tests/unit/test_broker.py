"""The local broker's pure parts and its failure messages (no broker is started here)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from infra.broker import BrokerConfig, LocalBroker, _cluster_id, fetch_jars
from infra.errors import BrokerStartError, ToolMissingError


def _config(tmp_path: Path, port: int = 19092, controller: int = 19093) -> BrokerConfig:
    return BrokerConfig(port=port, controller_port=controller, data_dir=tmp_path / "broker")


def test_server_properties_is_single_node_kraft_on_loopback(tmp_path: Path) -> None:
    props = dict(
        line.split("=", 1)
        for line in _config(tmp_path).server_properties().splitlines()
        if line and not line.startswith("#")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["log.dirs"] == str(tmp_path / "broker" / "kraft")


def test_missing_java_is_one_plain_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(ToolMissingError, match=r"Java is not installed.*install"):
        LocalBroker(_config(tmp_path)).start()


def test_missing_maven_is_one_plain_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match=r"Maven .* not installed.*install"):
        fetch_jars(tmp_path / "lib")


def test_port_in_use_is_reported_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(BrokerStartError, match=f"Port {port} .* already in use"):
            LocalBroker(_config(tmp_path, port=port, controller=port + 1)).start()
    assert not (tmp_path / "broker" / "broker.pid").exists()


def test_stop_never_kills_a_process_that_is_not_our_broker(tmp_path: Path) -> None:
    config = _config(tmp_path)
    config.data_dir.mkdir(parents=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        config.pid_file.write_text(f"{bystander.pid}\n")  # a stale or recycled pid
        broker = LocalBroker(config)
        assert broker.pid() is None
        assert broker.stop() is False
        assert bystander.poll() is None
        assert not config.pid_file.exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_when_nothing_runs_is_harmless(tmp_path: Path) -> None:
    assert LocalBroker(_config(tmp_path)).stop() is False


def test_external_cluster_starts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens there
    status = LocalBroker(_config(tmp_path)).start()
    assert status.external and not status.up and status.address == "127.0.0.1:1"
    assert not (tmp_path / "broker").exists()
    assert os.environ["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:1"


def test_cluster_ids_never_start_with_a_dash() -> None:
    """The storage tool reads ``-t -xyz`` as a missing argument; one id in 64 started so and
    failed a CI run."""
    ids = [_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert {len(i) for i in ids} == {22}
    assert len(set(ids)) == len(ids)
