"""How long the site monitor's checks take on a site's results (ml.serving.monitoring), without the database.

    .venv/bin/python bench/bench_monitor.py [--films 10000 100000 1000000]

For each size: building the checks from that many results (a third with feedback), the way the hourly
run does after its query, and the alarm boundaries the replay (--simulate) computes for a stream of that
length (first size only: they grow with the stream). Synthetic results; the numbers depend only on counts.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml.evaluation.monitor_replay import simulate
from ml.serving.monitoring import Film, Limits, reference_from_films, run_checks

CLASSES = ("covid", "normal", "pneumonia")


def synthetic_films(count: int, *, seed: int, feedback_share: float) -> list[Film]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, count)
    predicted = np.where(rng.random(count) < 0.7, truth, rng.integers(0, 3, count))
    alerts = rng.random(count) < np.where(truth == 0, 0.97, 0.55)
    warned = rng.random(count) < 0.06
    confirmed = rng.random(count) < feedback_share
    return [Film(CLASSES[p], bool(a), ("unfamiliar",) if w else (), CLASSES[t] if c else None)
            for t, p, a, w, c in zip(truth, predicted, alerts, warned, confirmed)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    reference = reference_from_films(synthetic_films(272, seed=0, feedback_share=1.0))
    limits = Limits(min_sensitivity=0.95, max_false_alerts=0.8)
    for count in args.films:
        films = synthetic_films(count, seed=1, feedback_share=1 / 3)
        started = time.perf_counter()
        checks = run_checks(reference, films, limits=limits)
        elapsed = time.perf_counter() - started
        print(f"{count:>9,} results: {len(checks)} checks in {elapsed * 1000:8.1f} ms")
    length = min(args.films)
    started = time.perf_counter()
    simulate(reference, synthetic_films(300, seed=2, feedback_share=1.0), feedback_shares=[1.0], streams=1,
             limits=limits, length=length)
    print(f"replay: alarm boundaries for a {length:,}-film stream and one stream in "
          f"{time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
