"""A minimal Faust app for the version check: topic in, table update, topic out.

Configured entirely by environment variables so that the test can run it as a real worker
process (``faust -A tests.integration.faust_smoke_app worker``).
"""

from __future__ import annotations

import os

import faust

app = faust.App(
    os.environ["SMOKE_APP_ID"],
    broker="kafka://" + os.environ["SMOKE_BOOTSTRAP"],
    datadir=os.environ["SMOKE_DATADIR"],
    store="memory://",
    web_enabled=False,
    topic_partitions=1,
    topic_replication_factor=1,
)
source = app.topic(os.environ["SMOKE_IN"], key_serializer="raw", value_serializer="raw")
output = app.topic(os.environ["SMOKE_OUT"], key_serializer="raw", value_serializer="raw")
counts = app.Table("counts", default=int, key_type=bytes, value_type=int)


@app.agent(source)
async def count(stream: faust.StreamT[bytes]) -> None:
    async for key, _value in stream.items():
        counts[key] += 1
        await output.send(key=key, value=f"{key.decode()}={counts[key]}".encode())
