"""Channel index and the resume store."""

from __future__ import annotations

from gateway.channels import StreamSpec
from gateway.registry import Registry, ResumeStore
from gateway.subscription import Subscription
from schemas.protocol import StreamType

SPEC = StreamSpec(StreamType.PRICE, "fiml.prices", ("A",), "")


class Owner:
    def wake(self) -> None: ...
    def fail(self, exc: BaseException) -> None: ...


def test_add_remove_and_safe_iteration() -> None:
    reg, owner = Registry(), Owner()
    s1, s2 = Subscription("1", SPEC, "conflated", 1.0), Subscription("2", SPEC, "conflated", 1.0)
    reg.add(s1, owner)
    reg.add(s2, owner)
    listed = reg.subscribers(("fiml.prices", "A", ""))
    reg.remove(s1)  # while a dispatch iterates over ``listed``
    assert [s.id for s, _ in listed] == ["1", "2"]
    assert [s.id for s, _ in reg.subscribers(("fiml.prices", "A", ""))] == ["2"]
    assert reg.stream_counts() == {"price": 1} and reg.symbols() == ["A"]


def test_resume_store_is_bounded_and_expires() -> None:
    store = ResumeStore(max_entries=2, ttl_s=10.0)
    for i in range(3):
        store.park(Subscription(str(i), SPEC, "conflated", 1.0), now=float(i))
    assert len(store) == 2 and store.claim("0", now=3.0) is None
    assert store.claim("1", now=3.0) is not None
    assert store.claim("2", now=100.0) is None  # expired
