"""Nothing ``fiml up`` starts outlives it, whatever ends it: SIGINT, SIGTERM, SIGHUP (the
terminal closed), a broken stdout pipe (``make demo | tee log`` and Ctrl-C), or SIGKILL of
``fiml up`` itself, which cannot clean up at all (its children die with it: PR_SET_PDEATHSIG)."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import time
from pathlib import Path

import pytest

from infra.procs import fiml_argv
from tests.conftest import free_port
from tests.e2e.up_stack import UpProcess, alive, descendants, fiml_up

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def wait_all_gone(pids: set[int], deadline: float = 40.0) -> None:
    end = time.monotonic() + deadline
    while (left := {p for p in pids if alive(p)}) and time.monotonic() < end:
        time.sleep(0.2)
    assert not left, f"left running after {deadline} s: {sorted(left)}"


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name
)
def test_no_process_outlives_fiml_up(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, sig: signal.Signals
) -> None:
    with fiml_up(kafka_bootstrap, free_port(), tmp_path, "--symbols", "BTC/USDT") as up:
        up.wait_for_line("first price after", timeout=120)
        children = up.descendants()
        assert len(children) >= 3, children  # ingest, arbitrate, gateway
        up.known |= children
        os.kill(up.popen.pid, sig)  # fiml up alone, as a closing terminal or `kill` does
        up.popen.wait(timeout=40)
        wait_all_gone(children)
    if sig is not signal.SIGKILL:
        assert up.popen.returncode == 0, "\n".join(up.seen)
        assert "stopped." in up.seen, "\n".join(up.seen)


def test_a_broken_stdout_pipe_does_not_leave_children_running(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """``make demo | tee log`` then Ctrl-C: tee dies first, and every line fiml up then writes
    meets a broken pipe."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FIML_ARB_DATADIR": str(tmp_path / "arbitration"),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        fiml_argv(
            "up",
            "--headless",
            "--gateway-port",
            str(free_port()),
            "--symbols",
            "BTC/USDT",
            "--log-dir",
            str(tmp_path / "logs"),
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    children: set[int] = set()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # read like tee until the pipeline runs
            if b"first price after" in line:
                break
        else:
            raise AssertionError("fiml up ended before the first price")
        children = descendants(proc.pid)
        assert len(children) >= 3, children
        proc.stdout.close()  # tee is gone
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=40)
        wait_all_gone(children)
    finally:
        for pid in (proc.pid, *children):
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_each_child_killed_is_restarted_and_nothing_is_left_after(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    with fiml_up(kafka_bootstrap, free_port(), tmp_path, "--symbols", "BTC/USDT") as up:
        up.wait_for_line("first price after", timeout=120)
        for name in ("ingest", "arbitrate", "gateway"):
            children = up.descendants()
            up.known |= children
            pid = next(
                p
                for p in children
                if f"fiml {name}".encode()
                in Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\x00", b" ")
            )
            started = count(up, f"{name} started")
            os.kill(pid, signal.SIGKILL)
            up.wait_for_line(f"{name} exited", timeout=30)
            wait_for_count(up, f"{name} started", started + 1, timeout=60)
        up.known |= up.descendants()
        everything = set(up.known)
        os.kill(up.popen.pid, signal.SIGTERM)
        up.popen.wait(timeout=40)
        wait_all_gone(everything)
    assert up.popen.returncode == 0, "\n".join(up.seen)


def count(up: UpProcess, needle: str) -> int:
    return sum(needle in line for line in up.seen)


def wait_for_count(up: UpProcess, needle: str, n: int, timeout: float) -> None:
    """Until ``needle`` has been printed ``n`` times (reading fiml up's output as it comes)."""
    deadline = time.monotonic() + timeout
    while count(up, needle) < n:
        assert time.monotonic() < deadline, f"{needle!r} not {n} times:\n" + "\n".join(up.seen)
        with contextlib.suppress(queue.Empty):
            up.seen.append(up.lines.get(timeout=0.2))
