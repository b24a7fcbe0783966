"""The checkpoint of one partition of ``fiml.raw``: what a restarted worker resumes from.

It is written in the same Kafka transaction as the outputs of the records it covers
(``worker/``), so the outputs and the state never disagree. Version 3 is a JSON object with
named fields; version 2 (a positional list, before issue 19) is still read.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

__all__ = ["CHECKPOINT_VERSION", "Checkpoint"]

CHECKPOINT_VERSION = 3
_POSITIONAL_VERSION = 2  # [2, applied, watermark, [state, ...]]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """``applied``: the offset of the last raw record applied (or dead-lettered), -1 for none;
    ``watermark``: the largest live event time seen in the partition (-1: none);
    ``states``: every symbol state of the partition (``SymbolState.to_bytes``), by symbol."""

    applied: int
    watermark: int
    states: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "v": CHECKPOINT_VERSION,
                "applied": self.applied,
                "watermark": self.watermark,
                "states": [orjson.Fragment(s) for s in self.states],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """Raises:
        ValueError: ``data`` is not a checkpoint of a version this build reads (orjson's
            JSONDecodeError is a ValueError)."""
        saved = orjson.loads(data)
        if isinstance(saved, dict) and saved.get("v") == CHECKPOINT_VERSION:
            applied, watermark, states = saved["applied"], saved["watermark"], saved["states"]
        elif isinstance(saved, list) and saved and saved[0] == _POSITIONAL_VERSION:
            _version, applied, watermark, states = saved
        else:
            version = saved.get("v") if isinstance(saved, dict) else (saved or [None])[0]
            raise ValueError(f"a checkpoint of version {version!r}, expected {CHECKPOINT_VERSION}")
        if not isinstance(applied, int) or not isinstance(watermark, int):
            raise ValueError("a checkpoint's applied offset and watermark are whole numbers")
        return cls(applied, watermark, tuple(orjson.dumps(s) for s in states))
