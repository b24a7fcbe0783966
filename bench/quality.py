"""The consensus against the truth (issue 16): every ``fiml quality`` scenario, no broker.

    python -m bench.quality [--duration 300]

Deterministic (fixed seeds): the figures do not depend on the machine, so several runs only
confirm it. Each scenario's consensus error is reported beside its baseline, the best single
provider followed alone, and the inverse-variance bound; the band's coverage too.
"""

from __future__ import annotations

import argparse

from agents.arbitration.quality import evaluate, scenarios
from bench.common import report


def metric(scenario: str, what: str) -> str:
    """The name of one figure of one scenario: ``quality_<scenario>_<what>``."""
    return f"quality_{scenario.replace('-', '_')}_{what}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds per scenario")
    args = parser.parse_args()
    metrics: dict[str, float] = {}
    for scenario in scenarios(int(args.duration * 1000)):
        r = evaluate(scenario)
        metrics[metric(scenario.name, "consensus_bps")] = r.consensus_bps
        metrics[metric(scenario.name, "best_bps")] = r.best_bps
        metrics[metric(scenario.name, "bound_bps")] = r.bound
        metrics[metric(scenario.name, "coverage_pct")] = 100 * r.coverage
    report("quality", metrics, note="simulated providers against a known truth, fixed seeds")


if __name__ == "__main__":
    main()
