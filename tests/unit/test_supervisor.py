"""The restart policy and stop sequence, with a fake process and a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from infra.supervisor import ChildSpec, ChildState, RestartPolicy, Supervisor


@dataclass
class FakeProcess:
    pid: int
    code: int | None = None
    ignores_term: bool = False
    signals: list[str] = field(default_factory=list)

    def poll(self) -> int | None:
        return self.code

    def terminate(self) -> None:
        self.signals.append("TERM")
        if not self.ignores_term:
            self.code = -15

    def kill(self) -> None:
        self.signals.append("KILL")
        self.code = -9 if self.code is None else self.code


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def make(
    policy: RestartPolicy | None = None, *names: str
) -> tuple[Supervisor, list[FakeProcess], Clock]:
    spawned: list[FakeProcess] = []
    clock = Clock()

    def spawn(spec: ChildSpec) -> FakeProcess:
        spawned.append(FakeProcess(pid=1000 + len(spawned)))
        return spawned[-1]

    specs = [ChildSpec(n, ("fiml", n)) for n in (names or ("a",))]
    return Supervisor(specs, spawn, policy or RestartPolicy(), clock), spawned, clock


def test_delay_grows_exponentially_up_to_the_cap() -> None:
    policy = RestartPolicy(initial_s=0.5, factor=2, max_s=4)
    assert [policy.delay(n) for n in range(0, 7)] == [0, 0.5, 1, 2, 4, 4, 4]


def test_start_spawns_each_child_once() -> None:
    sup, spawned, _ = make(None, "ingest", "gateway")
    events = sup.start()
    assert [e.child for e in events] == ["ingest", "gateway"]
    assert sup.start() == []
    assert len(spawned) == 2
    assert all(c.state is ChildState.RUNNING for c in sup.children.values())


def test_a_crashed_child_is_reported_then_restarted_after_its_backoff() -> None:
    sup, spawned, clock = make(RestartPolicy(initial_s=1, factor=2))
    sup.start()
    spawned[0].code = 1
    (event,) = sup.poll()
    assert event.kind == "exited" and "exit code 1" in event.detail
    assert sup.children["a"].state is ChildState.BACKOFF
    clock.now += 0.9
    assert sup.poll() == []
    clock.now += 0.2
    (event,) = sup.poll()
    assert event.kind == "started" and len(spawned) == 2
    assert sup.children["a"].restarts == 1
    # A second quick crash waits twice as long.
    spawned[1].code = 1
    sup.poll()
    assert sup.children["a"].restart_at == pytest.approx(clock.now + 2)


def test_a_child_that_was_healthy_long_enough_restarts_quickly_again() -> None:
    sup, spawned, clock = make(RestartPolicy(initial_s=1, factor=2, healthy_after_s=30))
    sup.start()
    for _ in range(3):  # a crash streak: 1, 2, 4 s
        spawned[-1].code = 1
        sup.poll()
        clock.now = sup.children["a"].restart_at
        sup.poll()
    assert sup.children["a"].streak == 3
    clock.now += 60  # healthy for a minute
    spawned[-1].code = 1
    sup.poll()
    assert sup.children["a"].restart_at == pytest.approx(clock.now + 1)


def test_gives_up_after_max_restarts() -> None:
    sup, spawned, clock = make(RestartPolicy(initial_s=0, max_restarts=1))
    sup.start()
    spawned[0].code = 1
    sup.poll()
    sup.poll()
    spawned[1].code = 2
    (event,) = sup.poll()
    assert event.kind == "gave_up"
    assert sup.children["a"].state is ChildState.FAILED
    clock.now += 100
    assert sup.poll() == [] and len(spawned) == 2


def test_stop_terminates_then_kills_the_ones_that_ignore_it() -> None:
    sup, spawned, clock = make(None, "polite", "stubborn")
    sup.start()
    spawned[1].ignores_term = True
    killed = sup.stop(timeout_s=5, sleep=clock.sleep)
    assert killed == ["stubborn"]
    assert spawned[0].signals == ["TERM", "KILL"]  # the group is always swept
    assert spawned[1].signals == ["TERM", "KILL"]
    assert clock.now >= 105
    assert all(c.state is ChildState.STOPPED for c in sup.children.values())


def test_stop_does_not_wait_when_everyone_exits() -> None:
    sup, _, clock = make(None, "a", "b")
    sup.start()
    assert sup.stop(timeout_s=5, sleep=clock.sleep) == []
    assert clock.now == 100.0


def test_a_child_waiting_for_restart_is_not_restarted_after_stop() -> None:
    sup, spawned, clock = make(RestartPolicy(initial_s=5))
    sup.start()
    spawned[0].code = 1
    sup.poll()
    sup.stop(timeout_s=1, sleep=clock.sleep)
    clock.now += 10
    assert sup.poll() == [] and len(spawned) == 1
