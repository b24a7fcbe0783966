"""JSON Schema and AsyncAPI export, generated from the models so they cannot drift.

``export(dir)`` writes ``<Model>.schema.json`` for every topic record and WebSocket message and
``asyncapi.json`` (AsyncAPI 3.0.0) for the WebSocket protocol. The committed copies live in
``schemas/json/``; ``tests/unit/schemas/test_jsonschema.py`` fails when they are out of date.
Output is deterministic (same models -> same bytes) so the check is a plain comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from schemas import protocol, records

__all__ = [
    "CLIENT_MESSAGES",
    "DEFAULT_DIR",
    "MODELS",
    "RECORDS",
    "SERVER_MESSAGES",
    "asyncapi",
    "export",
    "render",
]

DEFAULT_DIR = Path(__file__).parent / "json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

RECORDS: tuple[type[BaseModel], ...] = records.RECORD_MODELS
CLIENT_MESSAGES: tuple[type[BaseModel], ...] = (
    protocol.SubscribeRequest,
    protocol.UnsubscribeRequest,
    protocol.AuthRequest,
    protocol.HelloRequest,
)
SERVER_MESSAGES: tuple[type[BaseModel], ...] = (
    protocol.SubscriptionAck,
    protocol.UnsubscribeAck,
    protocol.DataMessage,
    protocol.Heartbeat,
    protocol.ErrorMessage,
    protocol.ReplayComplete,
    protocol.Welcome,
)
MODELS = RECORDS + CLIENT_MESSAGES + SERVER_MESSAGES


def _dumps(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def _mode(model: type[BaseModel]) -> JsonSchemaMode:
    # What the gateway accepts from clients (validation), and what readers receive from
    # topics and the gateway (serialization: every key is written, so every key is required).
    return "validation" if model in CLIENT_MESSAGES else "serialization"


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema(mode=_mode(model))}


def _message(model: type[BaseModel], summary: str) -> dict[str, Any]:
    return {
        "name": model.__name__,
        "title": model.__name__,
        "summary": summary,
        "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
    }


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the WebSocket protocol.

    Message payloads reference ``components/schemas``, generated from the same models (one
    shared set of definitions, so enums such as ``StreamType`` appear once).
    """
    protocol_models = CLIENT_MESSAGES + SERVER_MESSAGES
    _, top = models_json_schema(
        [(m, _mode(m)) for m in protocol_models],
        ref_template="#/components/schemas/{model}",
    )
    summaries = {m.__name__: (m.__doc__ or m.__name__).strip().splitlines()[0] for m in MODELS}
    messages = {m.__name__: _message(m, summaries[m.__name__]) for m in protocol_models}
    channel_refs = {name: {"$ref": f"#/components/messages/{name}"} for name in messages}
    prices_messages = ("SubscriptionAck", "DataMessage", "Heartbeat", "ErrorMessage")
    operations: dict[str, Any] = {}
    for channel, names in (("stream", tuple(messages)), ("prices", prices_messages)):
        for name in names:
            client = name in {m.__name__ for m in CLIENT_MESSAGES}
            operations[f"{channel}{name}"] = {
                # Actions are from the server's point of view: it receives client messages.
                "action": "receive" if client else "send",
                "channel": {"$ref": f"#/channels/{channel}"},
                "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"}],
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "FIML Stream WebSocket API",
            "version": "2.0.0",  # schema v2: ISO timestamps, the seed's keys
            "description": "Confidence-scored prices, quotes, trades and candles over WebSocket; "
            "compatible with the FIML seed protocol. Times are ISO 8601 UTC (`timestamp`) and "
            "UTC epoch milliseconds (`timestamp_ms`, `event_time_ms`).",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "localhost:8000", "protocol": "ws"}},
        "channels": {
            "stream": {
                "address": "/ws/stream",
                "description": "Full control: subscribe and unsubscribe to any stream.",
                "messages": channel_refs,
            },
            "prices": {
                "address": "/ws/prices/{symbols}",
                "description": "Auto-subscribes to the price stream at 1000 ms.",
                "parameters": {
                    "symbols": {
                        "description": "Comma-separated URL-form symbols (AAPL,BTC_USDT,~GSPC); "
                        "see schemas.symbols.to_url."
                    }
                },
                "messages": {name: channel_refs[name] for name in prices_messages},
            },
        },
        "operations": operations,
        "components": {"messages": messages, "schemas": top["$defs"]},
    }


def render() -> dict[str, bytes]:
    """File name -> content of every generated file."""
    files = {f"{m.__name__}.schema.json": _dumps(_model_schema(m)) for m in MODELS}
    files["asyncapi.json"] = _dumps(asyncapi())
    return files


def export(directory: Path | str = DEFAULT_DIR) -> list[Path]:
    """Write every generated file into ``directory`` (created if missing) and delete stale
    ``*.schema.json`` files there, so the directory always matches the models.

    Returns:
        The paths written, sorted.

    Raises:
        OSError: the directory cannot be created or written.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    files = render()
    for stale in target.glob("*.schema.json"):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, content in files.items():
        path = target / name
        path.write_bytes(content)
        written.append(path)
    return sorted(written)
