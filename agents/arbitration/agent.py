"""Wiring: the arbitration worker (``worker/worker.py``) on a Faust app and Kafka transactions.

``attach`` builds the engine, the three ports on Kafka (the batch source on Faust, the
publisher and the checkpoint store on aiokafka's transactions) and the worker over them, and
hangs the worker's timer, clean stop and metrics on the app. What happens to a batch, and the
guarantees, are in ``ArbitrationWorker.handle``.
"""

from __future__ import annotations

import os

import faust

from agents.arbitration.core.processor import RAW
from agents.arbitration.engine import make_processor
from agents.arbitration.metrics import readings
from agents.arbitration.settings import ArbitrationSettings
from agents.arbitration.worker.faust_adapter import FaustBatchSource, every, on_stop
from agents.arbitration.worker.transactions import KafkaCheckpointStore, KafkaPublisher
from agents.arbitration.worker.worker import ArbitrationWorker
from agents.metrics import serve
from schemas.topics import TOPICS, topic_name

__all__ = ["attach", "marks_topic", "source_name"]


def marks_topic(app_id: str) -> str:
    """The compacted topic of a worker group's partition marks (one per app id)."""
    return f"{app_id}-marks"


def source_name(logical: str, prefix: str | None) -> str:
    """A raw topic's name under ``prefix`` (None: the usual ``FIML_TOPIC_PREFIX``)."""
    return topic_name(logical) if prefix is None else prefix + TOPICS[logical].name


def attach(
    app: faust.App, bootstrap: str, settings: ArbitrationSettings, source_prefix: str | None = None
) -> ArbitrationWorker:
    """Put an arbitration worker on ``app`` (before it starts). The raw topic is read under
    ``source_prefix`` when given (``fiml rebuild``), else under ``FIML_TOPIC_PREFIX``.

    Raises:
        EngineUnavailableError: the compiled core is asked for and not installed.
    """
    raw = source_name(RAW, source_prefix)
    app_id = str(app.conf.id)
    marks = marks_topic(app_id)
    engine = make_processor(settings)  # FIML_ARB_ENGINE: the compiled core or the reference
    source = FaustBatchSource(app, raw)
    publisher = KafkaPublisher(
        bootstrap, app_id, raw, marks, TOPICS[RAW].partitions, settings.transaction_timeout_ms
    )
    worker = ArbitrationWorker(
        engine, source, publisher, KafkaCheckpointStore(bootstrap, marks), settings
    )
    source.feed(worker)
    every(app, settings.commit_ms / 1000, worker.commit_quiet)
    on_stop(app, worker.stop)
    port = os.environ.get("FIML_ARB_METRICS_PORT")
    if port:
        serve(
            int(port),
            lambda: readings(engine, worker.counters, worker.lag, worker.checkpoint_age_s),
        )
    return worker
