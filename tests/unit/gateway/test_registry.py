"""The channel index."""

from __future__ import annotations

from gateway.channels import StreamSpec
from gateway.registry import Registry
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


def test_two_connections_may_use_the_same_subscription_id() -> None:
    """Ids belong to their connection: two dashboard tabs both call theirs ``prices``."""
    reg = Registry()
    tab1, tab2 = (
        Subscription("prices", SPEC, "conflated", 1.0),
        Subscription("prices", SPEC, "conflated", 1.0),
    )
    reg.add(tab1, Owner())
    reg.add(tab2, Owner())
    assert len(reg) == 2 and tab1 in reg and tab2 in reg
    assert [s for s, _ in reg.subscribers(("fiml.prices", "A", ""))] == [tab1, tab2]
    reg.remove(tab1)
    assert [s for s, _ in reg.subscribers(("fiml.prices", "A", ""))] == [tab2]
