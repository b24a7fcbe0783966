"""Every private part of Faust and aiokafka the worker touches, pinned against the installed
versions (the list is at the top of ``agents/arbitration/worker/faust_adapter.py``).

None of them is an API: an upgrade of faust-streaming or aiokafka may rename, move or change
any one. This test fails then, naming the part, before a worker loses records in production.
Whoever upgrades reads the new code behind each failing check, mends the adapter, and updates
the expectation here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import aiokafka
import faust.app.base
import pytest
from aiokafka.consumer.fetcher import Fetcher
from faust.transport import base as faust_transport
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_kafka
from faust.types import Message

from agents.arbitration.worker import faust_adapter

#: The versions these expectations were read from (pyproject.toml pins them).
PINNED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


def parameters(fn: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(fn).parameters)


def source_of(fn: Callable[..., Any]) -> str:
    return inspect.getsource(fn)


def test_the_versions_are_the_pinned_ones() -> None:
    """The checks below were read from these versions; another one needs reading again."""
    assert {name: version(name) for name in PINNED} == PINNED


# -- Faust's Kafka consumer, subclassed by BatchConsumer -------------------------------------


def test_faust_calls_drain_messages_with_its_fetcher_service() -> None:
    base = faust_consumer.Consumer._drain_messages
    assert parameters(base) == ["self", "fetcher"]
    assert inspect.iscoroutinefunction(base)
    # the fetcher service's one task hands the consumer itself to it
    task = faust_consumer.Fetcher._fetcher  # a mode ServiceTask around the function
    assert "await consumer._drain_messages(self)" in source_of(task.fun)


def test_the_consumer_parts_drain_messages_uses() -> None:
    consumer = faust_kafka.Consumer
    # _fetch does what getmany does, once per fetch: the same private parts, in getmany's way
    assert parameters(consumer._wait_next_records) == ["self", "timeout"]
    assert inspect.iscoroutinefunction(consumer._wait_next_records)
    getmany = source_of(faust_consumer.Consumer.getmany)
    assert "records, active_partitions = await self._wait_next_records(timeout)" in getmany
    assert "or tp in self._buffered_partitions" in getmany
    assert "if self.flow_active:" in getmany and "await self.perform_seek()" in getmany
    assert "yield tp, to_message(tp, record)" in getmany
    assert parameters(consumer.perform_seek) == ["self"]
    assert parameters(consumer._to_message) == ["self", "tp", "record"]
    assert "self._buffered_partitions = set()" in source_of(faust_consumer.Consumer.__init__)
    assert parameters(consumer._add_gap) == ["self", "tp", "offset_from", "offset_to"]
    assert inspect.iscoroutinefunction(consumer._add_gap)
    assert parameters(consumer.seek) == ["self", "partition", "offset"]
    assert inspect.iscoroutinefunction(consumer.seek)
    # the offset last taken per partition, None when none: a defaultdict made in __init__
    init = source_of(faust_consumer.Consumer.__init__)
    assert "self._read_offset = defaultdict(lambda: None)" in init
    assert "self.callback = callback" in init
    assert "self.suspend_flow = Event()" in init
    assert consumer.consumer_stopped_errors  # a class attribute, a tuple of errors
    assert parameters(consumer.wait_first) == ["self", "coros", "timeout"]
    assert parameters(consumer.sleep) == ["self", "n"]
    assert parameters(consumer.assignment) == ["self"]
    assert parameters(consumer.highwater) == ["self", "tp"]


def test_the_consumer_makes_its_thread_with_new_consumer_thread() -> None:
    assert parameters(faust_kafka.Consumer._new_consumer_thread) == ["self"]
    made = source_of(faust_kafka.Consumer._new_consumer_thread)
    assert "AIOKafkaConsumerThread(self, loop=self.loop, beacon=self.beacon)" in made
    assert "self._thread = self._new_consumer_thread()" in source_of(
        faust_consumer.ThreadDelegateConsumer.__init__
    )


# -- Faust's consumer thread, subclassed by _ConsumerThread ----------------------------------


def test_the_thread_makes_the_worker_consumer_with_create_worker_consumer() -> None:
    thread = faust_kafka.AIOKafkaConsumerThread
    assert parameters(thread._create_worker_consumer) == ["self", "transport"]
    assert "return self._create_worker_consumer(transport)" in source_of(thread._create_consumer)


def test_the_thread_fetches_through_fetch_records() -> None:
    fetch = faust_kafka.AIOKafkaConsumerThread._fetch_records
    assert parameters(fetch) == ["self", "consumer", "active_partitions", "timeout", "max_records"]
    assert inspect.iscoroutinefunction(fetch)
    # ... handing its partitions to aiokafka's fetched_records as they are
    assert "fetcher.fetched_records(" in source_of(fetch)
    assert "active_partitions" in source_of(fetch)


# -- Faust's transport and app ---------------------------------------------------------------


def test_a_transport_makes_its_consumer_from_its_consumer_class() -> None:
    assert faust_kafka.Transport.Consumer is faust_kafka.Consumer
    assert "return self.Consumer(" in source_of(faust_kafka.Transport.create_consumer)
    assert issubclass(faust_adapter.BatchTransport, faust_kafka.Transport)
    # made as BatchTransport(app.conf.broker_consumer, app)
    assert parameters(faust_transport.Transport.__init__)[:3] == ["self", "url", "app"]


def test_the_app_transport_can_be_replaced_before_the_consumer_exists() -> None:
    transport = faust.App.transport
    assert isinstance(transport, property) and transport.fset is not None


def test_boot_strategy_turns_sensors_off() -> None:
    assert "enable_sensors" in parameters(faust.app.base.BootStrategy.__init__)


def test_a_faust_message_is_a_raw_record() -> None:
    assert {"topic", "partition", "offset", "key", "value"} <= set(Message.__slots__)


# -- aiokafka --------------------------------------------------------------------------------


def test_the_fetch_wait_is_an_attribute_read_when_the_consumer_starts() -> None:
    consumer = aiokafka.AIOKafkaConsumer
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in source_of(consumer.__init__)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in source_of(consumer.start)


def test_fetched_records_tests_only_the_truth_of_its_partitions_and_membership() -> None:
    """``OnlyThese`` is true and answers ``in``: that is all aiokafka may ask of it."""
    assert parameters(Fetcher.fetched_records) == ["self", "partitions", "timeout", "max_records"]
    code = source_of(Fetcher.fetched_records)
    uses = [
        line.strip()
        for line in code.splitlines()
        if "partitions" in line and not line.strip().startswith("#")
    ]
    assert uses == [
        "async def fetched_records(self, partitions, timeout=0, max_records=None):",
        "if partitions and tp not in partitions:",
    ]


@pytest.mark.parametrize(
    "name",
    ["_drain_messages", "_new_consumer_thread"],
)
def test_the_overrides_still_override_something(name: str) -> None:
    assert hasattr(faust_kafka.Consumer, name)
    assert getattr(faust_adapter.BatchConsumer, name) is not getattr(faust_kafka.Consumer, name)
