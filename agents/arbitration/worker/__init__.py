"""The arbitration worker: an engine over three small ports.

``worker.py`` (``ArbitrationWorker``) holds the guarantees: offsets never ahead of outputs,
exactly once, fencing. ``ports.py`` names what it runs on (a batch source, a publisher, a
checkpoint store), ``fakes.py`` has in-memory fakes of them for tests without a broker,
``faust_adapter.py`` the batch source on Faust (the one file touching Faust's private parts),
``transactions.py`` the publisher and the checkpoint store on aiokafka's transactions.
"""

from agents.arbitration.worker.errors import FencedError, UnreadableCheckpointError
from agents.arbitration.worker.ports import (
    BatchSource,
    CheckpointStore,
    Publisher,
    RawRecord,
    SourceEvents,
)
from agents.arbitration.worker.worker import ArbitrationWorker

__all__ = [
    "ArbitrationWorker",
    "BatchSource",
    "CheckpointStore",
    "FencedError",
    "Publisher",
    "RawRecord",
    "SourceEvents",
    "UnreadableCheckpointError",
]
