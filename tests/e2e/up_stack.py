"""Running ``fiml up --headless`` as a subprocess for the e2e tests, and proving it cleaned up.

Not a conftest: the e2e tests of other packages keep their own fixtures.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from infra.procs import fiml_argv


@dataclass
class UpProcess:
    popen: subprocess.Popen[str]
    gateway_url: str
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    known: set[int] = field(default_factory=set)  # every descendant seen while running

    def wait_for_line(self, needle: str, timeout: float) -> str:
        """The first output line containing ``needle``; fails with the output so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.seen:
                if needle in line:
                    return line
            try:
                self.seen.append(self.lines.get(timeout=0.2))
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    break
        raise AssertionError(f"no {needle!r} within {timeout} s; output:\n" + "\n".join(self.seen))

    def descendants(self) -> set[int]:
        """Every live process below ``fiml up`` (children run in their own sessions)."""
        return descendants(self.popen.pid)


def descendants(root: int) -> set[int]:
    """Every live process below ``root``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.contextmanager
def fiml_up(bootstrap: str, port: int, tmp: Path, *args: str) -> Iterator[UpProcess]:
    """``fiml up --headless`` against ``bootstrap``; always leaves nothing running."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "FIML_ARB_DATADIR": str(tmp / "arbitration"),
        "PYTHONUNBUFFERED": "1",
    }
    popen = subprocess.Popen(
        [*fiml_argv("up", "--headless", "--gateway-port", str(port),
                    "--log-dir", str(tmp / "logs"), *args)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    up = UpProcess(popen, f"http://127.0.0.1:{port}")

    def pump() -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            up.lines.put(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        yield up
    finally:
        up.known |= up.descendants()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGINT)
        try:
            popen.wait(timeout=40)
        finally:
            # Whatever happened above, nothing may outlive the test.
            for pid in [popen.pid, *up.known]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5)
            reader.join(timeout=5)  # the pipe ends when every writer has gone
            if popen.stdout is not None:
                popen.stdout.close()
        while not up.lines.empty():
            up.seen.append(up.lines.get_nowait())
