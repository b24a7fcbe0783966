"""Resume tokens (gateway/positions.py): a position opens only for the owner, subscription,
stream and epoch it was made for; anything altered, guessed or too long is refused with a
reason; every position survives the round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.positions import (
    MAX_TOKEN_LENGTH,
    Position,
    ResumeRefused,
    ResumeTokens,
    epoch_of,
)

SECRET = b"a secret of thirty-two bytes, at least"
TOKENS = ResumeTokens(SECRET)
EPOCH = epoch_of("cluster-1", "fiml.prices")
SPEC = "price|fiml.prices||BTC/USDT,ETH/USDT"


def make(position: Position, owner: str = "key:alice", sub_id: str = "prices") -> str:
    return TOKENS.make(owner, sub_id, SPEC, EPOCH, position)


@given(
    st.integers(0, 2**53),
    st.lists(st.integers(0, 2**62), min_size=1, max_size=64),
)
def test_every_position_survives_the_round_trip(seq: int, offsets: list[int]) -> None:
    position = Position(seq, tuple(offsets))
    token = make(position)
    assert TOKENS.open(token, "key:alice", "prices", SPEC, EPOCH) == position


def test_a_token_opens_only_for_what_it_was_made_for() -> None:
    token = make(Position(7, (10, 20, 30, 40)))
    wrong = {
        "another owner": ("key:mallory", "prices", SPEC, EPOCH),
        "anonymous": ("anonymous", "prices", SPEC, EPOCH),
        "another id": ("key:alice", "other", SPEC, EPOCH),
        "other symbols": ("key:alice", "prices", "price|fiml.prices||BTC/USDT", EPOCH),
    }
    for case, (owner, sub_id, spec, epoch) in wrong.items():
        with pytest.raises(ResumeRefused, match="not this subscription's"):
            TOKENS.open(token, owner, sub_id, spec, epoch)
        assert case
    other_secret = ResumeTokens(b"another secret, thirty-two bytes or more")
    with pytest.raises(ResumeRefused, match="not this subscription's"):
        other_secret.open(token, "key:alice", "prices", SPEC, EPOCH)


def test_a_new_epoch_refuses_old_positions_and_says_why() -> None:
    token = make(Position(7, (10, 20)))
    rebuilt = epoch_of("cluster-1", "rebuilt.fiml.prices")
    fresh = epoch_of("cluster-2", "fiml.prices")
    assert len({EPOCH, rebuilt, fresh}) == 3
    for epoch in (rebuilt, fresh):
        with pytest.raises(ResumeRefused, match="rebuilt or the broker started afresh"):
            TOKENS.open(token, "key:alice", "prices", SPEC, epoch)


@given(st.text(max_size=200))
def test_guessed_tokens_are_refused(guess: str) -> None:
    with pytest.raises(ResumeRefused):
        TOKENS.open(guess, "key:alice", "prices", SPEC, EPOCH)


@given(st.integers(0, 200), st.characters(codec="ascii", categories=["L", "N", "P"]))
def test_any_altered_character_is_refused(at: int, char: str) -> None:
    token = make(Position(123, (456, 789)))
    at %= len(token)
    altered = token[:at] + char + token[at + 1 :]
    if altered == token:
        return
    with pytest.raises(ResumeRefused):
        TOKENS.open(altered, "key:alice", "prices", SPEC, EPOCH)


def test_the_length_limit_is_published_and_enforced() -> None:
    fits = make(Position(1, tuple([10**10] * 150)))
    assert len(fits) <= MAX_TOKEN_LENGTH
    assert TOKENS.open(fits, "key:alice", "prices", SPEC, EPOCH).seq == 1
    too_long = make(Position(1, tuple([10**10] * 200)))
    assert len(too_long) > MAX_TOKEN_LENGTH
    with pytest.raises(ResumeRefused, match="not one this gateway issues"):
        TOKENS.open(too_long, "key:alice", "prices", SPEC, EPOCH)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        ResumeTokens(b"short")
