"""Differential vectors for the Rust port of agents/arbitration/core/ (consensus, reliability,
lags, copies, volatility, and the JSON writer), from the Python reference.

    .venv/bin/python native/arbcore/tests/vectors/gen_vectors.py /tmp/arbvec [scale [seed]]

writes one JSON-lines file per module into the directory; the Rust unit tests read them when
ARBCORE_VECTORS names it (cargo test, see each module's `python_vectors` test). Not committed:
generated files only. Floats travel as their IEEE bits (an int) or "nan", so nothing is lost;
an exception as "E:{type}: {message}"; states as the bytes of orjson.dumps(x.to_list()).
"""

from __future__ import annotations

import math
import random
import struct
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

from agents.arbitration.core.consensus import ConsensusParams, Quote, consensus
from agents.arbitration.core.copies import Agreement, copies_of
from agents.arbitration.core.lags import LagLearner, fit_lag
from agents.arbitration.core.reliability import ProviderStats
from agents.arbitration.core.volatility import Volatility


def F(x: float) -> int | str:
    if x != x:
        return "nan"
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def E(exc: Exception) -> str:
    return f"E:{type(exc).__name__}: {exc}"


def rand_bits_float(r: random.Random) -> float:
    return struct.unpack("<d", struct.pack("<Q", r.getrandbits(64)))[0]


def weird(r: random.Random) -> float:
    """A float from everywhere: realistic, tiny, huge, subnormal, zero, inf, nan."""
    k = r.random()
    if k < 0.4:
        return r.uniform(-100, 100)
    if k < 0.55:
        return r.choice([0.0, -0.0, 1.0, -1.0, 5e-324, -5e-324, 1e300, -1e300, 1e-300, 2.0])
    if k < 0.6:
        return r.choice([math.inf, -math.inf, math.nan])
    if k < 0.8:
        return 10 ** r.uniform(-320, 308) * r.choice([1, -1])
    return rand_bits_float(r)


def price(r: random.Random, base: float) -> float:
    k = r.random()
    if k < 0.8:
        return base * (1 + r.gauss(0, 0.0005))
    if k < 0.9:
        return base * (1 + r.gauss(0, 0.02))
    if k < 0.95:
        return base * r.choice([2.0, 0.5, 1e10, 1e-10, 1e300, 1e-300])
    if k < 0.99:
        return r.choice([5e-324, 1e-310, 1e308, 1.7976931348623157e308, base])
    # a new NaN object each time: CPython's tuple comparison treats the *same* object as equal
    # to itself, which no float comparison mirrors (decoded prices are distinct objects anyway)
    return r.choice([float("nan"), math.inf, 0.0, -1.0])


def gen_floats(r: random.Random, n: int, out):
    for i in range(n):
        if i % 3 == 0:
            x = rand_bits_float(r)
        elif i % 3 == 1:
            x = round(r.uniform(0, 100000), r.randint(0, 8))
        else:
            x = 10 ** r.uniform(-330, 308.25) * r.choice([1, -1])
        out.write(orjson.dumps([F(x), orjson.dumps(x).decode(), repr(x)]) + b"\n")
    s = "".join(chr(c) for c in range(0, 0x80)) + "é\u2028\U0001f600\x00"
    out.write(orjson.dumps(["str", s, orjson.dumps(s).decode()]) + b"\n")


def rand_stats(r: random.Random) -> ProviderStats:
    s = ProviderStats()
    if r.random() < 0.3:
        return s
    s.total_var = r.choice([r.uniform(-5, 100), 10 ** r.uniform(-5, 5), 0.0])
    s.samples = r.choice([0, 1, 3, 100, -5, r.randint(0, 1000)])
    s.fast_var = r.uniform(-5, 100)
    s.cusum = r.uniform(0, 40)
    s.white_var = r.choice([0.0, r.uniform(-1, 100), 10 ** r.uniform(-5, 5)])
    s.white_samples = r.choice([0, 0, 1, 5, -1, r.randint(0, 1000)])
    s.prev_price = r.choice([0.0, r.uniform(1, 200), 1e-300, 1e300])
    s.prev_ms = r.randint(-1, 10**6)
    s.excluded = r.random() < 0.3
    s.gap_ms = r.choice([0.0, r.uniform(0, 5000), r.uniform(-3000, 0), 499.99999999999994, 500.0])
    s.lag_ms = r.uniform(0, 3000)
    s.last_time_ms = r.choice([-1, r.randint(0, 10**6)])
    s.ticks = r.choice([0, 9, 10, r.randint(0, 100)])
    s.rejections = r.randint(0, 10)
    s.last_health_ms = r.randint(-1, 10**6)
    s.last_state = r.choice(["", "up", "down", "degraded", 'q"\\\x01é'])
    s.info_lag_ms = r.choice([0, 0, 500, 1200, -300, 6000, -(2**63), 2**63 - 1])
    return s


def gen_stats(r: random.Random, n: int, out):
    for _ in range(n):
        s = rand_stats(r)
        init = orjson.dumps(s.to_list()).decode()
        ops = []
        t = max(s.last_time_ms, 0)
        for _ in range(r.randint(1, 40)):
            k = r.randrange(8)
            try:
                if k == 0:
                    t += r.choice([0, 1, 50, 250, 1000, -100, 20000])
                    newest = t + r.choice([0, 0, 100, -50, 5000])
                    op = ["on_tick", t, newest]
                    s.on_tick(t, newest)
                    res = None
                elif k == 1:
                    m, e = r.choice([(weird(r), weird(r)), (r.uniform(0, 100), r.uniform(0, 10))])
                    op = ["learn", F(m), F(e)]
                    s.learn(m, e)
                    res = None
                elif k == 2:
                    p = r.choice([weird(r), r.uniform(90, 110), s.prev_price * 1.0001])
                    news = t + r.choice([0, 1, -1, 100])
                    op = ["learn_white", F(p), news]
                    s.learn_white(p, news)
                    res = None
                elif k == 3:
                    stale = r.choice([0, 1, 10000, -5])
                    op = ["reliability", stale]
                    res = F(s.reliability(stale))
                elif k == 4:
                    now, stale = (
                        t + r.choice([0, 999, 1000, 1001, 5000, 20000]),
                        r.choice([10000, 1000, 500]),
                    )
                    op = ["silent", now, stale]
                    res = s.silent(now, stale)
                elif k == 5:
                    now, stale = t + r.choice([0, 999, 1000, 1001, 5000]), r.choice([10000, 1000])
                    op = ["state", now, stale]
                    res = s.state(now, stale)
                elif k == 6:
                    op = ["values"]
                    res = [F(s.noise_var), F(s.white_noise_var), F(s.error_bps)]
                else:
                    s.excluded = not s.excluded
                    op = ["toggle"]
                    res = None
            except Exception as exc:
                res = E(exc)
            ops.append([op, res, orjson.dumps(s.to_list()).decode()])
        out.write(orjson.dumps({"init": init, "ops": ops}) + b"\n")
    # the old forms of from_list
    for data in (
        [1.0, 2.5, 3.5, 7, 4, 1, 99, "up"],
        [25.0, 1, 2.0, 0.0, 1.5, 3, 100.0, 5, True, 1.0, 2.0, 3, 4, 5, 6, "down"],
        [25, 1.9, 2, 0, 1, 3.7, 100, 5.5, 0, 1, 2, 3, 4, 5, 6, "x", 700, 9],
    ):
        out.write(
            orjson.dumps(
                {
                    "init": orjson.dumps(data).decode(),
                    "ops": [
                        [
                            ["values"],
                            None,
                            orjson.dumps(ProviderStats.from_list(data).to_list()).decode(),
                        ]
                    ],
                }
            )
            + b"\n"
        )


def gen_volatility(r: random.Random, n: int, out):
    for _ in range(n):
        v = Volatility()
        if r.random() < 0.5:
            v = Volatility(
                r.uniform(-0.01, 0.01),
                r.choice([0, 5, -3, 50]),
                r.randint(-1, 10**6),
                r.choice([r.uniform(1, 100), 0.0, 1e-300, 1e300]),
                r.uniform(0, 10),
            )
        init = orjson.dumps(v.to_list()).decode()
        ops = []
        t = max(v.anchor_ms, 0)
        base = r.choice([100.0, 1e-300, 1e300, 5e-324, 30000.0])
        for _ in range(r.randint(1, 60)):
            t += r.choice([1000, 5000, 9999, 10000, 15000, 100000])
            p = price(r, base) if r.random() < 0.9 else weird(r)
            var = r.choice([r.uniform(0, 5), weird(r), 0.0])
            try:
                v.observe(t, p, var)
                res = None
            except Exception as exc:
                res = E(exc)
            ops.append([[t, F(p), F(var)], res, F(v.per_ms()), orjson.dumps(v.to_list()).decode()])
        out.write(orjson.dumps({"init": init, "ops": ops}) + b"\n")


NAMES = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]


def gen_copies(r: random.Random, n: int, out):
    for _ in range(n):
        a = Agreement()
        if r.random() < 0.3:
            pairs = []
            for _ in range(r.randint(0, 10)):
                x, y = r.sample(NAMES, 2)
                item = [f"{x}\x00{y}", r.random(), r.choice([0.0, 19.0, 20.0, 50.0, -1.0])]
                if r.random() < 0.7:
                    item.append(float(r.randint(-1, 1000)))
                pairs.append(item)
            if r.random() < 0.05:
                pairs.append(["a\x00b\x00c", 0.9, 30.0, 1.0])
            a = Agreement.from_list(pairs)
        init = orjson.dumps(a.to_list()).decode()
        ops = []
        t = 0
        names = r.sample(NAMES, r.randint(2, 10))
        copy_of = {}
        if r.random() < 0.7:
            x, y = r.sample(names, 2)
            copy_of[y] = x
        for _ in range(r.randint(1, 80)):
            t += r.choice([0, 1, 100, 250])
            me = r.choice(names)
            diffs = []
            for o in names:
                if o == me or r.random() < 0.2:
                    continue
                near = copy_of.get(o) == me or copy_of.get(me) == o
                d2 = r.uniform(0, 0.01) if near and r.random() < 0.9 else r.uniform(0, 50)
                if r.random() < 0.03:
                    d2 = weird(r)
                vs = r.choice([r.uniform(0.1, 50), 0.0, weird(r)]) if r.random() < 0.1 else 2.0
                diffs.append((o, t - r.choice([0, 0, 100, 300]), d2, vs))
            try:
                a.observe(me, diffs)
                res = None
            except Exception as exc:
                res = E(exc)
            try:
                cp = sorted(a.copies())
            except Exception as exc:
                cp = E(exc)
            ops.append(
                [
                    [me, [[o, om, F(d), F(v)] for o, om, d, v in diffs]],
                    res,
                    cp,
                    orjson.dumps(a.to_list()).decode(),
                ]
            )
        out.write(orjson.dumps({"init": init, "ops": ops}) + b"\n")
    for _ in range(200):
        pairs = set()
        for _ in range(r.randint(0, 8)):
            x, y = sorted(r.sample(NAMES[:5], 2))
            pairs.add((x, y))
        p = r.choice(NAMES[:6])
        out.write(
            orjson.dumps({"copies_of": [p, sorted(pairs), sorted(copies_of(p, pairs))]}) + b"\n"
        )


def gen_lags(r: random.Random, n: int, out):
    for _ in range(n):
        lag = r.choice([0, 0, 700, 1500, 3000, 5200])
        base = r.choice([100.0, 30000.0, 1e-300, 1e300, 1.0])
        lr = LagLearner()
        if r.random() < 0.1:
            lr.samples = r.choice([-1, 39, 47])
        if r.random() < 0.02:  # restored times far away: Python's ints do not overflow
            lr.own_times, lr.own_prices = [r.choice([-(2**63), 2**63 - 1])], [base]
        init = orjson.dumps(lr.to_list()).decode()
        ops = []
        t = r.randint(0, 10**6)
        truth = [(t - 20000, base)]
        drift = r.choice([0.001, 0.01, 0.0, 1.0, r.uniform(0, 0.05)])
        sd = math.sqrt(max(drift, 1e-9))
        for _ in range(r.randint(1, 400)):
            t += r.choice([0, 1, 50, 100, 200, 250, 400, 1000]) if r.random() > 0.005 else 7000
            last = truth[-1][1] * (1 + r.gauss(0, sd * 1e-4 * 10))
            truth.append((t, last))
            shown = [p for tt, p in truth if tt <= t - lag]
            p = (shown[-1] if shown else base) * (1 + r.gauss(0, 0.0001))
            if r.random() < 0.01:
                p = weird(r)
            op = last * (1 + r.gauss(0, 0.0001))
            if r.random() < 0.01:
                op = r.choice([0.0, weird(r)])
            oms = t - r.choice([0, 100, 300, 1000]) + r.random()
            if r.random() < 0.01:
                oms = weird(r)
            try:
                res = lr.observe(t, p, op, oms, drift)
            except Exception as exc:
                res = E(exc)
            ops.append(
                [[t, F(p), F(op), F(oms), F(drift)], res, orjson.dumps(lr.to_list()).decode()]
            )
        out.write(orjson.dumps({"init": init, "ops": ops}) + b"\n")
    for _ in range(n * 5):
        fits = [r.uniform(0, 50) for _ in range(13)]
        lag = r.choice(range(0, 6001, 100))
        d = r.choice([0.001, 0.01, 0.0, r.uniform(0, 0.1), -0.01])
        if r.random() < 0.7:
            fits = [f + d * abs(c - lag) for f, c in zip(fits, range(0, 6001, 500), strict=True)]
        if r.random() < 0.05:
            fits[r.randrange(13)] = weird(r)
        out.write(orjson.dumps({"fit": [[F(f) for f in fits], F(d), fit_lag(fits, d)]}) + b"\n")


def gen_consensus(r: random.Random, n: int, out):
    for _ in range(n):
        now = r.randint(10**5, 10**12)
        base = r.choice([100.0, 30000.0, 1.0, 1e-300, 1e300, 5e-324, 1e-320, 1.7e308, 0.001])
        names = sorted(r.sample(NAMES, r.randint(1, 8)))
        quotes = []
        for p in names:
            t = now - r.choice([0, 0, 10, 500, 3000, 9999, 10000, 10001, 50000])
            since = None if r.random() < 0.7 else t - r.choice([0, 100, 2000])
            bid = r.choice([None, r.uniform(1, 2)])
            quotes.append(
                Quote(p, price(r, base), t, bid, None if bid is None else bid + 0.1, since)
            )
        r.shuffle(quotes)
        if r.random() < 0.1:  # equal prices and times
            quotes = [Quote(q.provider, base, now, None, None, None) for q in quotes]
        stats = {}
        for p in names:
            if r.random() < 0.8:
                stats[p] = rand_stats(r)
                if r.random() < 0.5:
                    stats[p].info_lag_ms = r.choice([0, 0, 500, 1200])
        drift = r.choice([0.0, 0.001, 0.01, r.uniform(0, 1), 1e300, 5e-324])
        if r.random() < 0.7:
            params = ConsensusParams()
        else:
            params = ConsensusParams(
                stale_ms=r.choice([10000, 1000, 0, 60000]),
                min_noise_bps=r.choice([0.1, 0.0, 1e-200, 1e200, 3.0]),
                hit_bps=r.choice([2.0, 0.0, 100.0]),
            )
        copies = set()
        if r.random() < 0.4 and len(names) >= 2:
            for _ in range(r.randint(1, 4)):
                x, y = sorted(r.sample(names, 2))
                copies.add((x, y))
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
            "stats": {p: orjson.dumps(s.to_list()).decode() for p, s in stats.items()},
            "drift": F(drift),
            "params": [params.stale_ms, F(params.min_noise_bps), F(params.hit_bps)],
            "copies": sorted(copies),
        }
        try:
            res = consensus(quotes, now, stats, drift, params, copies)
            if res is None:
                enc = None
            else:
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
                }
                wo = []
                for q in res.quotes:
                    at = q.news_ms - (stats[q.provider].info_lag_ms if q.provider in stats else 0)
                    try:
                        o = res.without({q.provider} | copies_of(q.provider, copies), at)
                        wo.append(
                            None if o is None else [F(o.price), F(o.error_var), F(o.stated_ms)]
                        )
                    except Exception as exc:
                        wo.append(E(exc))
                enc["without"] = wo
        except Exception as exc:
            enc = E(exc)
        out.write(orjson.dumps({"in": inp, "out": enc}) + b"\n")


def main() -> None:
    d = Path(sys.argv[1])
    scale = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    d.mkdir(parents=True, exist_ok=True)
    r = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 16)
    for name, fn, n in [
        ("floats", gen_floats, 100_000),
        ("stats", gen_stats, 3_000),
        ("volatility", gen_volatility, 2_000),
        ("copies", gen_copies, 1_000),
        ("lags", gen_lags, 300),
        ("consensus", gen_consensus, 10_000),
    ]:
        with open(d / f"{name}.jsonl", "wb") as out:
            fn(r, n * scale, out)


if __name__ == "__main__":
    main()
