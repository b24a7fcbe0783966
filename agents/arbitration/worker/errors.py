"""The worker's errors.

Exception
├── FencedError                    a partition's producer was fenced: another worker owns it
└── ValueError
    └── UnreadableCheckpointError  a partition's checkpoint is of a version this build
                                   cannot restore: the worker stops
"""

from __future__ import annotations

__all__ = ["FencedError", "UnreadableCheckpointError"]


class FencedError(Exception):
    """Another producer took over ``partition``'s transactional id (a newer owner): this one
    can neither send nor commit for it any more. The worker lets the partition go until its
    next assignment."""

    def __init__(self, partition: int, reason: str = "") -> None:
        super().__init__(f"raw partition {partition} is fenced" + (f": {reason}" if reason else ""))
        self.partition = partition


class UnreadableCheckpointError(ValueError):
    """A partition's saved checkpoint cannot be restored by this build. Its message is the one
    sentence an operator needs: whose state, where, and how to start again. Starting the
    partition from nothing instead would write its outputs a second time."""
