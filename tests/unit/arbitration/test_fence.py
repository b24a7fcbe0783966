"""The fence read at assignment survives any record on ``fiml.ohlcv``: a malformed one is
skipped, never a reason for the worker's assignment to fail. Pure: no broker."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from agents.arbitration.fence import Fence, add_final

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)
poison = st.one_of(
    st.binary(max_size=40).map(lambda b: b + b'"is_final":true'),
    st.fixed_dictionaries({"is_final": st.just(True), "symbol": json_values,
                           "interval": json_values.filter(lambda v: v != "1m"),
                           "window_start_ms": json_values})
    .map(lambda d: orjson.dumps(d)),
)


def final(symbol: str, start: int) -> bytes:
    return orjson.dumps({"symbol": symbol, "interval": "1m", "window_start_ms": start,
                         "is_final": True})


@given(bad=st.lists(poison, max_size=8), starts=st.lists(st.integers(0, 10**12), min_size=1,
                                                          max_size=5))
def test_the_fence_is_the_last_final_of_the_valid_records(bad: list[bytes],
                                                          starts: list[int]) -> None:
    fence: Fence = {}
    for value in [*(final("BTC/USDT", s) for s in starts), *bad, None, b'{"is_final":false}']:
        add_final(fence, value)
    assert fence[("BTC/USDT", "1m")] == max(starts)
    assert all(isinstance(k[0], str) and isinstance(v, int) for k, v in fence.items())
