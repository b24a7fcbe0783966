"""What the compiled core does when Python, asked on its behalf, fails in a way the reference
does not catch: it raises as the reference raises, and never dead-letters the record."""

from __future__ import annotations

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
