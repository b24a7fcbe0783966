"""The local broker and the topic registry, against a real Kafka broker."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from typer.testing import CliRunner

from infra.broker import BrokerConfig
from infra.cli import app
from infra.topics import create_topics, describe_topics
from schemas.topics import TOPICS, topic_name
from tests.conftest import TopicFactory

pytestmark = pytest.mark.integration


async def test_produce_consume_round_trip(kafka_bootstrap: str, make_topic: TopicFactory) -> None:
    topic = await make_topic(partitions=3)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for i in range(30):
            await producer.send(topic, f"v{i}".encode(), key=f"k{i % 3}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        seen: list[tuple[bytes, bytes]] = []
        while len(seen) < 30:
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, "no records arrived within 10 s"
            for records in batch.values():
                seen.extend((r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    # Per key, order is kept (one key -> one partition).
    for k in range(3):
        values = [v for key, v in seen if key == f"k{k}".encode()]
        assert values == [f"v{i}".encode() for i in range(k, 30, 3)]


async def test_provisioning_matches_registry_and_is_idempotent(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    created = await create_topics(kafka_bootstrap)
    assert sorted(created) == sorted(topic_name(t) for t in TOPICS)
    assert await create_topics(kafka_bootstrap) == []

    info = await describe_topics(kafka_bootstrap, [topic_name(t) for t in TOPICS])
    for logical, spec in TOPICS.items():
        found = info[topic_name(logical)]
        assert found.partitions == spec.partitions
        assert found.configs["cleanup.policy"] == spec.cleanup_policy
        assert found.configs["retention.ms"] == str(spec.retention_ms)


def test_cli_status_reports_the_broker(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    result = CliRunner().invoke(app, ["kafka", "status"])
    assert result.exit_code == 0, result.output
    assert "up" in result.output and kafka_bootstrap in result.output


def test_kafka_console_tools_interoperate(kafka_bootstrap: str, make_topic: TopicFactory) -> None:
    """A client that is not aiokafka (Kafka's own Java console tools) can use the broker."""
    import asyncio

    lib = BrokerConfig().lib_dir
    if not (lib / ".complete").exists():
        pytest.skip("broker jars not fetched (run `make broker`)")
    topic = asyncio.run(make_topic())
    messages = [f"java-{uuid.uuid4().hex[:6]}" for _ in range(5)]
    classpath = f"{lib}/*"
    subprocess.run(
        [
            "java",
            "-cp",
            classpath,
            "org.apache.kafka.tools.ConsoleProducer",
            "--bootstrap-server",
            kafka_bootstrap,
            "--topic",
            topic,
        ],
        input="\n".join(messages) + "\n",
        text=True,
        check=True,
        timeout=120,
    )
    consumed = subprocess.run(
        [
            "java",
            "-cp",
            classpath,
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            "--bootstrap-server",
            kafka_bootstrap,
            "--topic",
            topic,
            "--from-beginning",
            "--max-messages",
            "5",
            "--timeout-ms",
            "60000",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert consumed.stdout.split() == messages
