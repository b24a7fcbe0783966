"""The compiled core's failures: Python, asked on its behalf, fails in a way the reference does
not catch (it raises as the reference raises, and never dead-letters the record); and a core
built from other sources than the checkout's (refused in one sentence)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.arbitration import engine
from agents.arbitration.engine import make_processor
from agents.arbitration.settings import ArbitrationSettings

# not JSON: both engines hand it to decode_raw (the compiled one through its fallback)
BROKEN = b'{"provider":"a","seq":1 }x'


@pytest.mark.parametrize("name", ["python", "compiled"])
@pytest.mark.parametrize("batched", [False, True])
def test_an_unexpected_error_while_decoding_is_raised_not_dead_lettered(
    name: str, batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(value: bytes) -> None:
        raise MemoryError("simulated")

    # the reference's processor and the compiled core's fallback both call engine's or
    # processor's decode_raw: patch both names
    monkeypatch.setattr(engine, "decode_raw", out_of_memory)
    monkeypatch.setattr("agents.arbitration.core.processor.decode_raw", out_of_memory)
    processor = make_processor(ArbitrationSettings(engine=name))
    with pytest.raises(MemoryError, match="simulated"):
        if batched:
            processor.process_many(0, [(None, BROKEN, 0), (None, BROKEN, 1)])
        else:
            processor.process(None, BROKEN, 0, 0)
    # the records after it are not applied: the worker stops here, and the next owner applies
    # this record again from the last checkpoint (what this processor holds is thrown away)
    assert processor.resume_offset(0) == 1


def test_the_core_built_from_these_sources_is_taken() -> None:
    assert engine.CORE_SOURCES.is_dir()  # a checkout: the check is on
    make_processor(ArbitrationSettings(engine="compiled"))  # raises if the build is stale


def test_a_core_built_from_other_sources_is_refused_in_one_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A `git pull` without `make setup` leaves the old core in the venv: it would run the old
    algorithm beside the new Python side, silently."""
    monkeypatch.setattr(engine, "_checkout_fingerprint", lambda: "0000000000000000")
    with pytest.raises(engine.EngineUnavailableError, match=r"run `make setup` to rebuild it"):
        make_processor(ArbitrationSettings(engine="compiled"))


def test_the_fingerprint_changes_with_any_source(tmp_path: Path) -> None:
    root = engine.CORE_SOURCES
    before = engine.source_fingerprint(root)
    assert before == engine.source_fingerprint(root)  # a function of the files alone
    copy = tmp_path / "arbcore"
    (copy / "src").mkdir(parents=True)
    for name in ("Cargo.toml", "Cargo.lock"):
        (copy / name).write_bytes((root / name).read_bytes())
    for source in (root / "src").glob("*.rs"):
        (copy / "src" / source.name).write_bytes(source.read_bytes())
    assert engine.source_fingerprint(copy) == before
    (copy / "src" / "lib.rs").write_bytes((root / "src" / "lib.rs").read_bytes() + b"\n")
    assert engine.source_fingerprint(copy) != before
