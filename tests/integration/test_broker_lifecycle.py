"""`fiml kafka start | status | stop` on free ports: idempotent start, clean stop."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra.broker import BrokerConfig, LocalBroker
from infra.cli import app
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def test_start_twice_status_stop_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    port, controller = free_port(), free_port()
    args = ["--port", str(port), "--controller-port", str(controller), "--data-dir", str(tmp_path)]
    runner = CliRunner()
    broker = LocalBroker(BrokerConfig(port=port, controller_port=controller, data_dir=tmp_path))
    try:
        first = runner.invoke(app, ["kafka", "start", *args])
        assert first.exit_code == 0, first.output
        pid = broker.pid()
        assert pid is not None

        again = runner.invoke(app, ["kafka", "start", *args])
        assert again.exit_code == 0, again.output
        assert broker.pid() == pid  # harmless: the same broker, not a second one

        status = runner.invoke(app, ["kafka", "status", *args])
        assert status.exit_code == 0
        assert f"up at 127.0.0.1:{port}" in status.output and "4.1.1" in status.output
        assert (tmp_path / "broker.log").stat().st_size > 0
    finally:
        stopped = runner.invoke(app, ["kafka", "stop", *args])
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    assert broker.pid() is None
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    down = runner.invoke(app, ["kafka", "status", *args])
    assert down.exit_code == 1 and "down" in down.output


def test_corrupt_data_directory_is_one_sentence_and_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra.errors import BrokerStartError

    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    config = BrokerConfig(port=free_port(), controller_port=free_port(), data_dir=tmp_path)
    config.storage_dir.mkdir(parents=True)
    (config.storage_dir / "meta.properties").write_text("version=1\ncluster.id=\nnode.id=7\n")
    broker = LocalBroker(config)
    with pytest.raises(BrokerStartError, match=r"corrupt or from another cluster.*--wipe"):
        broker.start(timeout=60)
    assert broker.pid() is None
    assert not config.pid_file.exists()
