"""``fiml rebuild``: replay ``fiml.raw`` from offset 0 into fresh derived topics.

The arbitration is a function of the raw records (docs/ARBITRATION.md, "Determinism"), so a
worker with a fresh app id (no marks, a new consumer group starting at offset 0)
that reads the raw topic under the source prefix and writes the derived topics under a new
prefix rebuilds them record for record. This module captures the raw topic's end offsets,
creates the target topics, runs one worker process, waits until the group's committed offsets
reach the captured ends (the worker commits its offsets in the transactions that write the
outputs), stops the worker and reports what was written.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.arbitration.core.processor import RAW
from agents.arbitration.engine import make_processor
from agents.arbitration.settings import ArbitrationSettings
from infra.topics import ensure_topic
from schemas.topics import TOPICS

__all__ = [
    "DERIVED",
    "RebuildReport",
    "committed",
    "committed_records",
    "end_offsets",
    "rebuild",
    "wait_caught_up",
]

#: The topics the arbitration writes (logical names).
DERIVED = (
    "fiml.prices",
    "fiml.quotes",
    "fiml.trades",
    "fiml.ohlcv",
    "fiml.provider.health",
    "fiml.deadletter",
)
_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RebuildReport:
    source_prefix: str
    target_prefix: str
    app_id: str
    raw: dict[str, int] = field(default_factory=dict)  # raw topic -> records replayed
    derived: dict[str, int] = field(default_factory=dict)  # derived topic -> records committed
    seconds: float = 0.0


async def end_offsets(
    bootstrap: str,
    prefix: str,
    logicals: tuple[str, ...],
) -> dict[TopicPartition, int]:
    """The end offset of every partition of ``prefix + logical`` for each logical topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [
            TopicPartition(prefix + TOPICS[k].name, p)
            for k in logicals
            for p in range(TOPICS[k].partitions)
        ]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


async def committed_records(
    bootstrap: str,
    prefix: str,
    logicals: tuple[str, ...],
) -> dict[str, int]:
    """How many committed records each ``prefix + logical`` topic holds: counted by reading
    with ``read_committed``, because the arbitration writes in transactions and each commit
    takes an offset of its own (a marker, not a record)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(prefix + TOPICS[k].name, p)
            for k in logicals
            for p in range(TOPICS[k].partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)  # before end_offsets, or position says the end
        ends = await consumer.end_offsets(tps)
        counts = {tp.topic: 0 for tp in tps}
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                counts[tp.topic] += len(batch.get(tp, []))
        return counts
    finally:
        await consumer.stop()


async def committed(
    bootstrap: str,
    group: str,
    tps: list[TopicPartition],
) -> dict[TopicPartition, int]:
    """The committed offsets of ``group`` (0 where none)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {tp: (await consumer.committed(tp)) or 0 for tp in tps}
    finally:
        await consumer.stop()


async def wait_caught_up(
    bootstrap: str,
    group: str,
    ends: dict[TopicPartition, int],
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Until ``group`` has committed at least ``ends`` (the worker commits offsets in the
    transactions that write the outputs of those records).

    Raises:
        TimeoutError: not caught up within ``timeout_s``.
        RuntimeError: ``alive()`` turned false first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    wanted = {tp: end for tp, end in ends.items() if end > 0}
    while True:
        got = await committed(bootstrap, group, list(wanted))
        if all(got[tp] >= end for tp, end in wanted.items()):
            return
        if not alive():
            raise RuntimeError("the worker exited before it caught up")
        if loop.time() > deadline:
            raise TimeoutError(f"not caught up after {timeout_s} s: {got}")
        await asyncio.sleep(0.5)


def _spawn(env: dict[str, str], log_path: Path | None) -> subprocess.Popen[bytes]:
    """A worker process in its own process group, logging to ``log_path`` (or nowhere)."""
    with log_path.open("ab") if log_path else open(os.devnull, "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faust",
                "-A",
                "agents.arbitration.app",
                "worker",
                "-l",
                "info" if log_path else "warn",
                "--without-web",
            ],
            env=env,
            cwd=_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group; SIGKILL after 60 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def rebuild(
    bootstrap: str,
    source_prefix: str,
    target_prefix: str,
    *,
    app_id: str | None = None,
    timeout_s: float = 3600.0,
    log_path: Path | None = None,
) -> RebuildReport:
    """Rebuild the derived topics of ``source_prefix`` under ``target_prefix``.

    Raises:
        ValueError: the two prefixes are equal (a rebuild never writes into live topics).
        TimeoutError: the worker had not caught up after ``timeout_s`` (it is stopped).
        RuntimeError: the worker process exited before it caught up.
        EngineUnavailableError: ``FIML_ARB_ENGINE`` names the compiled core and it is not
            installed (said here, before a worker starts and exits).
        KafkaError: (aiokafka) the broker cannot be reached.
    """
    if source_prefix == target_prefix:
        raise ValueError("the target prefix must differ from the source prefix")
    make_processor(ArbitrationSettings.from_env())  # the worker's engine, as it will make it
    app_id = app_id or f"{target_prefix}fiml-rebuild-{uuid.uuid4().hex[:8]}"
    report = RebuildReport(source_prefix, target_prefix, app_id)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    ends = await end_offsets(bootstrap, source_prefix, (RAW,))  # fixed now
    for logical in DERIVED:
        spec = TOPICS[logical]
        await ensure_topic(bootstrap, target_prefix + spec.name, spec.partitions, spec.configs())
    with tempfile.TemporaryDirectory() as datadir:
        env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            FIML_TOPIC_PREFIX=target_prefix,
            FIML_ARB_SOURCE_PREFIX=source_prefix,
            FIML_ARB_APP_ID=app_id,
            FIML_ARB_DATADIR=datadir,
        )
        proc = _spawn(env, log_path)
        try:
            await wait_caught_up(bootstrap, app_id, ends, timeout_s, lambda: proc.poll() is None)
        finally:
            _stop(proc)
    for tp, end in ends.items():
        report.raw[tp.topic] = report.raw.get(tp.topic, 0) + end
    report.derived = await committed_records(bootstrap, target_prefix, DERIVED)
    report.seconds = loop.time() - t0
    return report
