"""Differential vectors recorded from the Python processor on a realistic synthetic stream
(lags, copies, bad prints, a frozen, a dark, a biased and a degrading provider): every call of
consensus and of the learners' methods, in the formats of gen_vectors.py, so the same Rust
tests read them.

    .venv/bin/python native/arbcore/tests/vectors/gen_recorded.py /tmp/arbrec [seconds [seed]]
    ARBCORE_VECTORS=/tmp/arbrec cargo test
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_vectors import E, F

import agents.arbitration.core.processor as processor_module
from agents.arbitration.core.consensus import consensus
from agents.arbitration.core.copies import Agreement, copies_of
from agents.arbitration.core.lags import LagLearner
from agents.arbitration.core.reliability import ProviderStats
from agents.arbitration.core.volatility import Volatility
from agents.arbitration.settings import ArbitrationSettings
from agents.arbitration.synthetic import ProviderModel, synthetic_ticks
from schemas.codec import encode

OUT: dict[str, list[bytes]] = {
    k: [] for k in ("consensus", "stats", "lags", "copies", "volatility")
}


def dumps(x: object) -> str:
    return orjson.dumps(x.to_list()).decode()  # type: ignore[attr-defined]


def record(name: str, init: str, op: list, res: object, *after: object) -> None:
    if "null" not in init:  # a NaN or an infinity cannot be read back, by either side
        OUT[name].append(orjson.dumps({"init": init, "ops": [[op, res, *after]]}))


def wrap_stats(method: str, encode_op, encode_res=lambda r: None) -> None:
    original = getattr(ProviderStats, method)

    @functools.wraps(original)
    def wrapper(self, *args):
        before = dumps(self)
        try:
            r = original(self, *args)
            res = encode_res(r)
        except Exception as exc:
            record("stats", before, encode_op(*args), E(exc), dumps(self))
            raise
        record("stats", before, encode_op(*args), res, dumps(self))
        return r

    setattr(ProviderStats, method, wrapper)


def install() -> None:
    wrap_stats("on_tick", lambda t, n: ["on_tick", t, n])
    wrap_stats("learn", lambda m, e: ["learn", F(m), F(e)])
    wrap_stats("learn_white", lambda p, n: ["learn_white", F(p), n])
    wrap_stats("reliability", lambda s: ["reliability", s], F)
    wrap_stats("silent", lambda n, s: ["silent", n, s], lambda r: r)

    lag_observe = LagLearner.observe

    def observe_lag(self, t, p, op, oms, drift):
        before = dumps(self)
        args = [t, F(p), F(op), F(oms), F(drift)]
        try:
            r = lag_observe(self, t, p, op, oms, drift)
        except Exception as exc:
            record("lags", before, args, E(exc), dumps(self))
            raise
        record("lags", before, args, r, dumps(self))
        return r

    LagLearner.observe = observe_lag

    agree_observe = Agreement.observe

    def observe_agreement(self, provider, differences):
        differences = list(differences)
        before = dumps(self)
        args = [provider, [[o, om, F(d), F(v)] for o, om, d, v in differences]]
        try:
            agree_observe(self, provider, differences)
            res = None
        except Exception as exc:
            res = E(exc)
        try:
            cp = sorted(self.copies())
        except Exception as exc:
            cp = E(exc)
        record("copies", before, args, res, cp, dumps(self))
        if isinstance(res, str):
            raise ValueError(res)

    Agreement.observe = observe_agreement

    vol_observe = Volatility.observe

    def observe_volatility(self, now, price, var):
        before = dumps(self)
        args = [now, F(price), F(var)]
        try:
            vol_observe(self, now, price, var)
            res = None
        except Exception as exc:
            record("volatility", before, args, E(exc), F(self.per_ms()), dumps(self))
            raise
        record("volatility", before, args, res, F(self.per_ms()), dumps(self))

    Volatility.observe = observe_volatility

    def recorded_consensus(quotes, now, stats, drift, params, copies=frozenset()):
        stats_saved = {p: dumps(s) for p, s in stats.items()}
        inp = {
            "quotes": [
                [
                    q.provider,
                    F(q.price),
                    q.time_ms,
                    None if q.bid is None else F(q.bid),
                    None if q.ask is None else F(q.ask),
                    q.since_ms,
                ]
                for q in quotes
            ],
            "now": now,
            "stats": stats_saved,
            "drift": F(drift),
            "params": [params.stale_ms, F(params.min_noise_bps), F(params.hit_bps)],
            "copies": sorted(copies),
        }
        try:
            res = consensus(quotes, now, stats, drift, params, copies)
        except Exception as exc:
            OUT["consensus"].append(orjson.dumps({"in": inp, "out": E(exc)}))
            raise
        if res is None:
            enc = None
        else:
            wo = []
            for q in res.quotes:
                at = q.news_ms - (stats[q.provider].info_lag_ms if q.provider in stats else 0)
                try:
                    o = res.without({q.provider} | copies_of(q.provider, copies), at)
                    wo.append(None if o is None else [F(o.price), F(o.error_var), F(o.stated_ms)])
                except Exception as exc:
                    wo.append(E(exc))
            enc = {
                "price": F(res.price),
                "band_low": F(res.band_low),
                "band_high": F(res.band_high),
                "confidence": F(res.confidence),
                "used": list(res.used),
                "rejected": list(res.rejected),
                "flags": list(res.flags),
                "variance": F(res.variance_bps2),
                "weights": [F(w) for w in res.weights],
                "noises": [F(x) for x in res.noises],
                "infos": list(res.infos),
                "without": wo,
            }
        if not any("null" in s for s in stats_saved.values()):
            OUT["consensus"].append(orjson.dumps({"in": inp, "out": enc}))
        return res

    processor_module.consensus = recorded_consensus


def main() -> None:
    d = Path(sys.argv[1])
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 120
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    d.mkdir(parents=True, exist_ok=True)
    install()
    models = [
        ProviderModel("fast", noise_bps=1.5, every_ms=100),
        ProviderModel("slow", noise_bps=4.0, every_ms=700, lag_ms=2_000),
        ProviderModel("bad", noise_bps=3.0, every_ms=300, bad_print_rate=0.05),
        ProviderModel("copy", noise_bps=0.5, every_ms=250, copy_of="fast"),
        ProviderModel("frozen", every_ms=400, frozen_from_ms=seconds * 500),
        ProviderModel("dark", every_ms=200, dark_from_ms=30_000, dark_until_ms=60_000),
        ProviderModel("biased", every_ms=500, bias_bps=40.0),
        ProviderModel("degr", every_ms=300, degrade_from_ms=50_000, degraded_noise_bps=30.0),
    ]
    ticks, _ = synthetic_ticks(
        ["BTC/USDT", "ETH/USDT", "X/USD"], models, 1_700_000_000_000, seconds * 1000, seed=seed
    )
    proc = processor_module.Processor(ArbitrationSettings())
    for offset, tick in enumerate(ticks):
        proc.process(tick.symbol.encode(), encode(tick), 0, offset)
    proc.drain()
    for name, lines in OUT.items():
        (d / f"{name}.jsonl").write_bytes(b"\n".join(lines) + b"\n" if lines else b"")
        print(name, len(lines))


if __name__ == "__main__":
    main()
