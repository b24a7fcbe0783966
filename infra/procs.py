"""Child processes in their own process group, so that stopping one stops all it started.

A terminal's Ctrl-C goes to the foreground process group only; children in their own session
do not see it, so ``fiml up`` decides the order and the deadline of the shutdown itself. And
so that nothing outlives ``fiml up`` even when it cannot shut down (SIGKILL), each child asks
the kernel for a SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from infra.supervisor import ChildSpec

__all__ = ["GroupProcess", "die_with_parent", "fiml_argv", "spawner"]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child sent SIGTERM when this process dies, however it
    dies (SIGKILL included); None where the kernel has no such request (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def preexec() -> None:  # runs in the child, between fork and exec
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request was made
            os._exit(1)

    return preexec


def fiml_argv(*args: str) -> tuple[str, ...]:
    """The command line of a ``fiml`` sub-command run with this interpreter's environment.

    The ``fiml`` script next to ``sys.executable`` if installed; otherwise the same entry
    point through ``-c`` (``infra.cli`` has no ``__main__`` block, so ``-m`` would not run it).
    """
    script = Path(sys.executable).with_name("fiml")
    if script.exists():
        return (str(script), *args)
    return (sys.executable, "-c", "from infra.cli import main; main()", *args)


class GroupProcess:
    """A ``subprocess.Popen`` started as the leader of a new session (and process group)."""

    def __init__(self, argv: tuple[str, ...], env: dict[str, str] | None, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                preexec_fn=die_with_parent(),  # safe: fiml up spawns from one thread
            )
        self.log = log

    @property
    def pid(self) -> int:
        return self._popen.pid

    def poll(self) -> int | None:
        return self._popen.poll()

    def _signal_group(self, sig: signal.Signals) -> None:
        # The group id is the leader's pid (start_new_session); it is gone once every member
        # has exited, which is what we wanted anyway.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def terminate(self) -> None:
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=5)


def spawner(log_dir: Path) -> Callable[[ChildSpec], GroupProcess]:
    """A ``spawn`` callable for ``Supervisor`` writing each child's output to a log file."""

    def spawn(spec: ChildSpec) -> GroupProcess:
        return GroupProcess(spec.argv, spec.env, log_dir / f"{spec.name}.log")

    return spawn
