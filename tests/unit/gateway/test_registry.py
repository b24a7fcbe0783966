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
    subs = [Subscription(str(i), SPEC, "conflated", 1.0) for i in range(3)]
    for i, sub in enumerate(subs):
        store.park(sub, "me", now=float(i))
    assert len(store) == 2 and store.claim(subs[0].resume_token, "0", "me", now=3.0) is None
    assert store.claim(subs[1].resume_token, "1", "me", now=3.0) is subs[1]
    assert store.claim(subs[2].resume_token, "2", "me", now=100.0) is None  # expired


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


def test_only_the_owner_with_the_token_resumes() -> None:
    """A resume needs the subscription's secret token and its owner: an id alone, another
    key with the token, or the token of another subscription id resume nothing, and the
    subscription stays parked for its owner."""
    store = ResumeStore(max_entries=10, ttl_s=10.0)
    sub = Subscription("prices", SPEC, "conflated", 1.0)
    store.park(sub, "key:alice", now=0.0)
    assert store.claim("prices", "prices", "key:alice", now=1.0) is None  # the id is no token
    assert store.claim(sub.resume_token, "prices", "key:mallory", now=1.0) is None
    assert store.claim(sub.resume_token, "other", "key:alice", now=1.0) is None
    assert store.claim(sub.resume_token, "prices", "key:alice", now=1.0) is sub
    assert len(store) == 0
    assert Subscription("x", SPEC, "conflated", 1.0).resume_token != sub.resume_token
