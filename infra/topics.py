"""Topic provisioning: make the cluster's topics match the registry in ``schemas.topics``.

Creation is idempotent: topics that exist are left alone (their partition count is reported,
never changed, because changing it would move symbols between partitions).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from schemas.topics import TOPICS, TopicSpec, topic_name

__all__ = ["TopicInfo", "create_topics", "describe_topics", "ensure_topic"]


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    configs: dict[str, str]


async def create_topics(
    bootstrap: str, specs: Iterable[TopicSpec] | None = None, prefix_names: bool = True
) -> list[str]:
    """Create every topic in ``specs`` (default: the whole registry) that does not exist yet.

    Returns the names created in this call.
    """
    specs = list(TOPICS.values() if specs is None else specs)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        # Replicate 3 ways where a cluster can hold it; a single dev broker holds one copy.
        replication = 1 if len(await _brokers(admin)) < 3 else 3
        wanted = [
            NewTopic(
                topic_name(spec.name) if prefix_names else spec.name,
                spec.partitions,
                replication,
                topic_configs=spec.configs(),
            )
            for spec in specs
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            # Another process may provision concurrently: the goal is met all the same.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        return [t.name for t in missing]
    finally:
        await admin.close()


async def ensure_topic(bootstrap: str, name: str, partitions: int, configs: dict[str, str]) -> None:
    """Create one ad-hoc topic (tests, rebuilds) unless it exists."""
    extra = {k: v for k, v in configs.items() if k != "retention.ms"}
    retention = int(configs.get("retention.ms", "-1"))
    spec = TopicSpec(name, "", "", partitions, retention, extra_configs=extra)
    await create_topics(bootstrap, [spec], prefix_names=False)


async def describe_topics(bootstrap: str, names: Iterable[str]) -> dict[str, TopicInfo]:
    """Partition counts and the non-default configs of existing topics, read back from Kafka."""
    names = list(names)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        meta = await admin.describe_topics(names)
        partitions = {t["topic"]: len(t["partitions"]) for t in meta if t.get("error_code") == 0}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in partitions]
        )
        out: dict[str, TopicInfo] = {}
        for response in responses:
            for resource in response.resources:
                _err, _msg, _type, name, entries = resource[:5]
                configs = {entry[0]: entry[1] for entry in entries}
                out[name] = TopicInfo(name, partitions[name], configs)
        return out
    finally:
        await admin.close()


async def _brokers(admin: AIOKafkaAdminClient) -> list[object]:
    cluster = await admin.describe_cluster()
    return list(cluster.get("brokers", []))
