"""The Faust app of the arbitration worker.

Run it with ``fiml arbitrate`` or ``faust -A agents.arbitration.app worker -l warn`` (the faust
command line takes ``warn``, not ``warning``: it exits at once on an unknown level).
Configuration comes from the environment (docs/ARBITRATION.md lists it):
``KAFKA_BOOTSTRAP_SERVERS``, ``FIML_TOPIC_PREFIX``, ``FIML_ARB_APP_ID``, ``FIML_ARB_DATADIR``,
``FIML_ARB_*`` settings. Several workers with the same app id share the partitions.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import faust

from agents.arbitration.agent import attach
from agents.arbitration.settings import ArbitrationSettings
from infra.broker import fiml_home
from schemas.topics import TOPICS

__all__ = ["app", "create_app"]

_QUIET = ("aiokafka", "faust", "mode", "kafka")


def create_app(
    app_id: str | None = None,
    bootstrap: str | None = None,
    datadir: str | None = None,
    settings: ArbitrationSettings | None = None,
) -> faust.App:
    """A configured arbitration app (not started). Arguments default to the environment."""
    # Faust leaves aiokafka's loggers at DEBUG: building the discarded records cost about a
    # tenth of the CPU in the measurements (DESIGN.md).
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    bootstrap = bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    prefix = os.environ.get("FIML_TOPIC_PREFIX", "")
    # A SIGKILLed worker holds its partitions, and its open transactions hold back every
    # read_committed reader of them, until its session expires: with Kafka's 45-60 s, prices
    # stopped for a minute after a crash in the demo; 10 s, and a heartbeat a second, since
    # nothing in the worker blocks its event loop for long.
    session = float(os.environ.get("FIML_ARB_SESSION_TIMEOUT_S", "10"))
    # Not relative to the working directory: `fiml up` and workers may start anywhere.
    settings = settings or ArbitrationSettings.from_env()
    datadir = datadir or os.environ.get("FIML_ARB_DATADIR") or str(fiml_home() / "arbitration")
    Path(datadir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id or os.environ.get("FIML_ARB_APP_ID", f"{prefix}fiml-arbitration"),
        broker=",".join(f"kafka://{b}" for b in bootstrap.split(",")),
        datadir=datadir,
        store="memory://",  # no Faust table: the state is in the marks topic (agent.py)
        web_enabled=False,
        topic_partitions=TOPICS["fiml.raw"].partitions,
        topic_replication_factor=int(os.environ.get("FIML_REPLICATION", "1")),
        consumer_auto_offset_reset="earliest",  # a new group starts from the event log's start
        producer_linger_ms=5,
        broker_max_poll_records=settings.batch_max,
        producer_acks=-1,
        # A SIGKILLed member holds its partitions until its session expires: a shorter session
        # (FIML_ARB_SESSION_TIMEOUT_S) makes a restarted worker take over sooner.
        broker_session_timeout=session,
        broker_heartbeat_interval=session / 10,
    )
    # Sensors cost per-record callbacks; this worker reports its own counts.
    app.boot_strategy = faust.app.base.BootStrategy(app, enable_sensors=False)
    attach(app, bootstrap, settings, os.environ.get("FIML_ARB_SOURCE_PREFIX"))
    return app


app = create_app()
