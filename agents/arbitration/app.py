"""The Faust app of the arbitration worker, configured from the environment.

Run it with ``fiml arbitrate`` or ``faust -A agents.arbitration.app worker -l warn`` (the faust
command line takes ``warn``, not ``warning``: it exits at once on an unknown level).
Configuration (docs/ARBITRATION.md lists it): ``KAFKA_BOOTSTRAP_SERVERS``,
``FIML_TOPIC_PREFIX``, ``FIML_ARB_APP_ID``, ``FIML_ARB_DATADIR``, ``FIML_ARB_SOURCE_PREFIX``,
``FIML_ARB_SESSION_TIMEOUT_S``, ``FIML_REPLICATION`` and the ``FIML_ARB_*`` settings. Several
workers with the same app id share the partitions.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import faust

from agents.arbitration.agent import attach
from agents.arbitration.settings import ArbitrationSettings
from agents.arbitration.worker import faust_adapter
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
    settings = settings or ArbitrationSettings.from_env()
    # Not relative to the working directory: `fiml up` and workers may start anywhere.
    datadir = datadir or os.environ.get("FIML_ARB_DATADIR") or str(fiml_home() / "arbitration")
    Path(datadir).mkdir(parents=True, exist_ok=True)
    app = faust_adapter.create_app(
        app_id or os.environ.get("FIML_ARB_APP_ID", f"{prefix}fiml-arbitration"),
        bootstrap,
        datadir,
        partitions=TOPICS["fiml.raw"].partitions,
        replication=int(os.environ.get("FIML_REPLICATION", "1")),
        batch_max=settings.batch_max,
        # A SIGKILLed worker holds its partitions, and its open transactions hold back every
        # read_committed reader of them, until its session expires: with Kafka's 45-60 s,
        # prices stopped for a minute after a crash in the demo; 10 s, and a heartbeat a
        # second, since nothing in the worker blocks its event loop for long.
        session_timeout_s=float(os.environ.get("FIML_ARB_SESSION_TIMEOUT_S", "10")),
    )
    attach(app, bootstrap, settings, os.environ.get("FIML_ARB_SOURCE_PREFIX"))
    return app


app = create_app()
