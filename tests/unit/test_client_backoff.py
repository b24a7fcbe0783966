"""fiml_stream's backoff: exponential, capped, with full jitter (spread, never negative)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from fiml_stream import Backoff


@given(st.integers(0, 10_000), st.integers(0, 2**32))
def test_a_delay_is_within_zero_and_the_capped_exponential(attempt: int, seed: int) -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0)
    delay = backoff.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= min(30.0, 0.5 * 2 ** min(attempt, 30))


def test_clients_dropped_at_once_do_not_come_back_at_once() -> None:
    """Full jitter: a thousand clients on their fifth retry spread over the whole window."""
    rng = random.Random(7)
    delays = sorted(Backoff(base_s=0.5, cap_s=30.0).delay(5, rng) for _ in range(1_000))
    assert delays[0] < 1.0 and delays[-1] > 15.0  # the window is [0, 16]
    assert len({round(d, 3) for d in delays}) > 900
