"""Shared plumbing for the benchmark scripts: a broker, fresh topics, child processes.

Each scenario script prints, as its last line of stdout, one JSON object
``{"scenario": name, "metrics": {metric: number}}`` that ``bench/run.py`` collects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MACHINE_NOTE = (
    f"{os.cpu_count()} cores shared by the broker, the workers, the gateway, "
    "the producers and the clients"
)


#: A gateway under a benchmark's load: every load client connects from 127.0.0.1, which the
#: per-IP connection limit (256, docs/WEBSOCKET.md) would cut at 4029. A first soak after the
#: limit came in served 256 of its 1,000 clients and reported a quarter of the updates.
LOAD_GATEWAY_ENV = {"FIML_GATEWAY_MAX_CONNECTIONS_PER_IP": "1000000"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def kafka() -> Iterator[str]:
    """``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local broker on free ports, stopped after."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    from infra.broker import BrokerConfig, LocalBroker

    with tempfile.TemporaryDirectory(prefix="fiml-bench-") as tmp:
        config = BrokerConfig(port=free_port(), controller_port=free_port(), data_dir=Path(tmp))
        broker = LocalBroker(config)
        broker.start()
        try:
            yield config.bootstrap
        finally:
            broker.stop()


def fresh_prefix(bootstrap: str) -> str:
    """A new FIML_TOPIC_PREFIX with the whole registry provisioned under it."""
    from infra.topics import create_topics

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    os.environ["FIML_TOPIC_PREFIX"] = prefix
    asyncio.run(create_topics(bootstrap))
    return prefix


def spawn(args: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """A child in its own process group (so that stop() ends its children too)."""
    out = log.open("ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


def fiml(*args: str) -> list[str]:
    return [sys.executable, "-m", "infra.cli", *args]


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_http(url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def report(scenario: str, metrics: dict[str, float], **extra: object) -> None:
    print(json.dumps({"scenario": scenario, "metrics": metrics, **extra}))


async def bare_read(bootstrap: str, topic: str, partitions: int) -> int:
    """The baseline of every history figure: a bare aiokafka consumer reading all of ``topic``
    from the beginning to its end (manual assignment, ``read_committed``, no group), counting
    records and doing nothing else with them. Returns the number of records read."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        client_id="fiml-bench-bare",
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        # Offsets first, then assign and seek at once: an assigned partition without a position
        # is long-polled at the log's end, and lookups wait behind it (gateway/history.py).
        ends = await consumer.end_offsets(parts)
        begins = await consumer.beginning_offsets(parts)
        todo = {tp for tp in parts if begins[tp] < ends[tp]}
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, begins[tp])
        count = 0
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=5000)
            for tp, messages in batches.items():
                count += len(messages)
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
            if not batches:
                raise RuntimeError(f"no progress reading {topic} within 5 s")
        return count
    finally:
        await consumer.stop()
