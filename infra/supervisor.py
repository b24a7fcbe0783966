"""Supervising child processes: who runs, who crashed, when to restart, how to stop.

Pure logic: processes come from a ``spawn`` callable and time from a ``clock``, so the restart
policy and the stop sequence are tested with fakes (tests/unit/test_supervisor.py). The real
process handle (its own process group, signals) lives in ``infra.procs``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

__all__ = [
    "Child",
    "ChildSpec",
    "ChildState",
    "Event",
    "Process",
    "RestartPolicy",
    "Supervisor",
]


class Process(Protocol):
    """What the supervisor needs of a running child."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None:
        """The exit code once the child has exited, else None."""

    def terminate(self) -> None:
        """Ask the child (and its process group) to stop."""

    def kill(self) -> None:
        """Stop the child (and its process group) now."""


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str] | None = None


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff between restarts of a child that keeps crashing.

    A child that stayed up for ``healthy_after_s`` is healthy again: its next crash restarts
    it after ``initial_s``, so one crash a day never accumulates into a 30 s outage.
    """

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    healthy_after_s: float = 30.0
    max_restarts: int | None = None  # None: keep trying for as long as we run

    def delay(self, failures: int) -> float:
        """Seconds to wait before restart number ``failures`` (1-based) of a crash streak."""
        if failures < 1:
            return 0.0
        return float(min(self.max_s, self.initial_s * self.factor ** (failures - 1)))


class ChildState(Enum):
    NEW = "new"
    RUNNING = "running"
    BACKOFF = "backoff"  # crashed, waiting to be restarted
    FAILED = "failed"  # crashed too often; given up
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class Child:
    spec: ChildSpec
    state: ChildState = ChildState.NEW
    process: Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    streak: int = 0  # crashes since the child was last healthy
    restart_at: float = 0.0
    last_exit: int | None = None


@dataclass(frozen=True)
class Event:
    """Something the status screen should tell the user."""

    child: str
    kind: str  # "started", "exited", "restarting", "gave_up"
    detail: str = ""


@dataclass
class Supervisor:
    """Starts children, restarts crashed ones with backoff, stops all of them."""

    specs: Sequence[ChildSpec]
    spawn: Callable[[ChildSpec], Process]
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    clock: Callable[[], float] = time.monotonic
    children: dict[str, Child] = field(init=False)

    def __post_init__(self) -> None:
        self.children = {spec.name: Child(spec) for spec in self.specs}

    def start(self) -> list[Event]:
        """Spawn every child that is not running yet."""
        return [self._launch(c) for c in self.children.values() if c.state is ChildState.NEW]

    def _launch(self, child: Child) -> Event:
        child.process = self.spawn(child.spec)
        child.state = ChildState.RUNNING
        child.started_at = self.clock()
        return Event(child.spec.name, "started", f"pid {child.process.pid}")

    def poll(self) -> list[Event]:
        """Notice exits, schedule restarts and perform the ones that are due."""
        events: list[Event] = []
        now = self.clock()
        for child in self.children.values():
            if child.state is ChildState.RUNNING and child.process is not None:
                code = child.process.poll()
                if code is None:
                    continue
                child.last_exit = code
                if now - child.started_at >= self.policy.healthy_after_s:
                    child.streak = 0
                child.streak += 1
                limit = self.policy.max_restarts
                if limit is not None and child.restarts >= limit:
                    child.state = ChildState.FAILED
                    events.append(Event(child.spec.name, "gave_up", f"exit code {code}"))
                    continue
                delay = self.policy.delay(child.streak)
                child.state = ChildState.BACKOFF
                child.restart_at = now + delay
                events.append(
                    Event(child.spec.name, "exited", f"exit code {code}; restart in {delay:g} s")
                )
            elif child.state is ChildState.BACKOFF and now >= child.restart_at:
                child.restarts += 1
                events.append(self._launch(child))
        return events

    def stop(
        self, timeout_s: float = 10.0, sleep: Callable[[float], None] = time.sleep
    ) -> list[str]:
        """Terminate every child, wait up to ``timeout_s``, then kill the ones left.

        Returns the names of the children that had to be killed.
        """
        running = [c for c in self.children.values() if c.state is ChildState.RUNNING]
        for child in self.children.values():
            if child.state is not ChildState.RUNNING:
                child.state = ChildState.STOPPED
        for child in running:
            assert child.process is not None
            child.state = ChildState.STOPPING
            child.process.terminate()
        deadline = self.clock() + timeout_s
        while self.clock() < deadline and any(
            c.process is not None and c.process.poll() is None for c in running
        ):
            sleep(0.05)
        killed = []
        for child in running:
            assert child.process is not None
            if child.process.poll() is None:
                killed.append(child.spec.name)
            # Kill the group even when the leader has exited: a grandchild may remain.
            child.process.kill()
            child.state = ChildState.STOPPED
        return killed
