"""Each module's ``__all__`` is its public surface: no duplicates, every name importable."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import schemas

MODULES = ["schemas", "schemas.codec", "schemas.errors", "schemas.jsonschema",
           "schemas.protocol", "schemas.records", "schemas.symbols", "schemas.cli"]  # fmt: skip


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert len(set(module.__all__)) == len(module.__all__)
    for public in module.__all__:
        assert hasattr(module, public), f"{name}.{public}"


def test_error_hierarchy() -> None:
    for error in (schemas.DecodeError, schemas.ProtocolError, schemas.SymbolError):
        assert issubclass(error, schemas.SchemaError)
    assert issubclass(schemas.SymbolError, ValueError)


def test_package_does_not_import_the_rest_of_the_project() -> None:
    # A fresh interpreter: this test process may have imported anything.
    code = (
        "import sys, schemas, schemas.cli, schemas.jsonschema;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'agents', 'gateway', 'infra'}))"
    )
    root = Path(schemas.__file__).parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "[]"
