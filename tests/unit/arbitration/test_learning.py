"""What is learned per provider and pair (reliability.py, copies.py), on hand-made inputs."""

from __future__ import annotations

import orjson

from agents.arbitration.core.copies import MIN_SAMPLES, Agreement
from agents.arbitration.core.reliability import PRIOR_NOISE_VAR, ProviderStats


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


def test_a_provider_silent_while_others_tick_is_down_within_twice_its_interval() -> None:
    """Issue 17: "connected but mute". sim-alpha ticks every 250 ms, then stops while
    sim-beta goes on; its health turns ``down`` once the event time is more than twice its
    interval (0.5 s, at least MIN_SILENCE_MS) past its last tick, not after the 10 s of
    staleness."""
    from agents.arbitration.core.processor import Processor
    from agents.arbitration.core.reliability import MIN_SILENCE_MS
    from agents.arbitration.settings import ArbitrationSettings
    from agents.arbitration.synthetic import ProviderModel, synthetic_ticks
    from schemas.codec import encode

    start = 1_700_000_000_000
    models = [
        ProviderModel("sim-alpha", noise_bps=1.5, every_ms=250, dark_from_ms=30_000),
        ProviderModel("sim-beta", noise_bps=3.0, every_ms=100),
    ]
    ticks, _ = synthetic_ticks(["BTC/USDT"], models, start, 40_000, seed=3)
    proc = Processor(ArbitrationSettings())
    for offset, tick in enumerate(ticks):
        proc.process(None, encode(tick), 0, offset)
    health = [
        orjson.loads(value)
        for topic, _key, value, _p, _h in proc.drain()
        if topic == "fiml.provider.health"
    ]
    alpha = [h for h in health if h["provider"] == "sim-alpha"]
    last_tick = max(t.event_time_ms for t in ticks if t.provider == "sim-alpha")
    down = [h for h in alpha if h["state"] == "down"]
    assert down, "sim-alpha was never reported down"
    assert all(h["event_time_ms"] > last_tick for h in down)  # not before it went quiet
    assert down[0]["event_time_ms"] - last_tick <= MIN_SILENCE_MS + 100  # 2 x 250 ms < 1 s
