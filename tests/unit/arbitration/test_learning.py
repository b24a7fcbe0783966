"""What is learned per provider and pair (reliability.py, copies.py), on hand-made inputs."""

from __future__ import annotations

from agents.arbitration.copies import MIN_SAMPLES, Agreement
from agents.arbitration.reliability import PRIOR_NOISE_VAR, ProviderStats


def test_the_white_noise_climbs_back_from_zero() -> None:
    """Found by attack: with every estimate at 0 the winsorising cap was 0 too, so a provider
    whose estimate had fallen to 0 stayed there and got all the weight."""
    s = ProviderStats(total_var=-5.0, white_var=0.0, white_samples=100)
    price = 100.0
    for i in range(200):
        price = 100.03 if i % 2 else 100.0  # 3 bp changes: white noise of 4.5 bp²
        s.learn_white(price, 1_000 * (i + 1))
    assert 3.0 < s.white_noise_var < 6.0


def test_the_white_noise_is_the_prior_until_a_change_is_seen() -> None:
    s = ProviderStats()
    assert s.white_noise_var == PRIOR_NOISE_VAR
    s.learn_white(100.0, 1)
    assert s.white_noise_var == PRIOR_NOISE_VAR  # one quote: no change yet
    s.learn_white(100.0, 2)
    assert s.white_noise_var == 0.0


def test_each_quote_of_the_other_provider_counts_once() -> None:
    """A fast provider ticking against a slow one's unchanged quote observes it once."""
    agreement = Agreement()
    for _tick in range(10 * MIN_SAMPLES):
        agreement.observe("fast", [("slow", 1_000, 0.0, 10.0)])  # the same quote each time
    assert agreement.pairs["fast\x00slow"][1] == 1
    assert agreement.copies() == set()


def test_a_pair_near_more_than_half_the_time_is_a_copy() -> None:
    agreement = Agreement()
    for i in range(MIN_SAMPLES):
        near = 0.0 if i % 3 else 100.0  # two in three near
        agreement.observe("b", [("a", i, near, 10.0)])
    assert agreement.copies() == {("a", "b")}
    restored = Agreement.from_list(agreement.to_list())
    assert restored.pairs == agreement.pairs and restored.copies() == {("a", "b")}


def test_pairs_saved_without_the_last_time_counted_restore() -> None:
    """Found running the demo after an upgrade: a mark written by the first build of the copy
    test (two numbers a pair) crashed the worker at every start."""
    restored = Agreement.from_list([["a\x00b", 0.75, 30.0]])
    assert restored.pairs == {"a\x00b": [0.75, 30.0, -1.0]}
    assert restored.copies() == {("a", "b")}
