"""The baseline the issue measured: a naive Faust agent, one ``await topic.send`` per record.

Configured by environment (bench/arbitration.py starts it as a worker process).
"""

from __future__ import annotations

import logging
import os

import faust

from schemas.codec import decode, encode
from schemas.records import RawTick

for _name in ("aiokafka", "faust", "mode"):
    logging.getLogger(_name).setLevel(logging.WARNING)

app = faust.App(
    os.environ["BENCH_APP_ID"],
    broker="kafka://" + os.environ["KAFKA_BOOTSTRAP_SERVERS"],
    datadir=os.environ["BENCH_DATADIR"],
    web_enabled=False,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
)
source = app.topic(
    os.environ["BENCH_IN"],
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)
output = app.topic(
    os.environ["BENCH_OUT"],
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)


@app.agent(source)
async def forward(stream: faust.StreamT[bytes]) -> None:
    async for key, value in stream.items():
        await output.send(key=key, value=encode(decode(RawTick, value)))
