"""The committed JSON Schemas and AsyncAPI document match the models; the CLI writes them."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from schemas.cli import app
from schemas.jsonschema import DEFAULT_DIR, MODELS, asyncapi, export, render

REGENERATE = "run `fiml schemas export` (or `python -m typer schemas.cli run export`)"


def test_committed_files_are_up_to_date(tmp_path: Path) -> None:
    export(tmp_path)
    fresh = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_bytes() for p in DEFAULT_DIR.iterdir() if p.suffix == ".json"}
    assert sorted(committed) == sorted(fresh), f"files differ: {REGENERATE}"
    stale = [name for name in fresh if committed[name] != fresh[name]]
    assert not stale, f"out of date: {stale}; {REGENERATE}"


def test_one_schema_per_model_and_deterministic() -> None:
    files = render()
    assert set(files) == {f"{m.__name__}.schema.json" for m in MODELS} | {"asyncapi.json"}
    assert render() == files
    tick = orjson.loads(files["RawTick.schema.json"])
    assert tick["additionalProperties"] is False
    assert tick["properties"]["price"]["exclusiveMinimum"] == 0
    assert "event_time_ms" in tick["required"]


def test_asyncapi_document_is_consistent() -> None:
    doc = asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["stream"]["address"] == "/ws/stream"
    assert doc["channels"]["prices"]["address"] == "/ws/prices/{symbols}"
    assert set(doc["channels"]["prices"]["parameters"]) == {"symbols"}
    schemas = doc["components"]["schemas"]
    messages = doc["components"]["messages"]
    # Every reference in the document resolves inside it.
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    for ref in refs:
        target: object = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, ref
            target = target[part]
    actions = {name: op["action"] for name, op in doc["operations"].items()}
    assert actions["streamSubscribeRequest"] == "receive"
    assert actions["streamDataMessage"] == "send"
    assert {"SubscribeRequest", "DataMessage", "PriceUpdate", "ErrorCode"} <= set(schemas)
    assert messages["DataMessage"]["payload"] == {"$ref": "#/components/schemas/DataMessage"}


def test_cli_export(tmp_path: Path) -> None:
    (tmp_path / "Gone.schema.json").write_text("{}")  # stale files are removed
    result = CliRunner().invoke(app, ["export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    files = len(MODELS) + 1  # a schema per model, and the AsyncAPI document
    assert f"wrote {files} files" in result.output
    assert len(list((tmp_path / "out").iterdir())) == files
    export(tmp_path)
    assert not (tmp_path / "Gone.schema.json").exists()
