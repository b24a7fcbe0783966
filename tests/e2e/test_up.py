"""``fiml up`` against the session broker: prices flow, a killed child comes back, and
stopping it leaves no process behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.up_stack import alive, fiml_up

pytestmark = pytest.mark.e2e


def test_up_runs_the_pipeline_restarts_a_crash_and_stops_cleanly(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    started = time.monotonic()
    with fiml_up(kafka_bootstrap, port, tmp_path, "--symbols", "AAPL,BTC/USDT") as up:
        up.wait_for_line("gateway ready", timeout=90)
        line = up.wait_for_line("first price after", timeout=120)
        print(line, f"(measured by the test: {time.monotonic() - started:.1f} s)")
        # The first price may be BTC/USDT's: wait for AAPL's (equities tick less often).
        deadline = time.monotonic() + 60
        while httpx.get(f"{up.gateway_url}/prices/AAPL", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "no AAPL price within 60 s of the first price"
            time.sleep(0.2)

        # A crashed child is reported and restarted.
        children = up.descendants()
        up.known |= children
        ingest = next(p for p in children if b"ingest" in Path(f"/proc/{p}/cmdline").read_bytes())
        os.killpg(ingest, signal.SIGKILL)
        up.wait_for_line("ingest exited", timeout=20)
        up.wait_for_line("ingest started", timeout=20)
        up.known |= up.descendants()
    assert up.popen.returncode == 0, "\n".join(up.seen)
    assert "stopped." in up.seen
    assert not [pid for pid in up.known if alive(pid)], "processes left behind"
