"""Running a differential fuzz campaign (httpay's reader or encoder against a reference library):
the inputs shared among worker processes, the tallies summed, the disagreements printed."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable

Work = Callable[[tuple[str, int]], tuple[int, int, list[str]]]


def campaign(name: str, work: Work, count: int, seed: str, workers: int, agreed: str) -> int:
    """Run `count` inputs of `work` (inputs, agreed, disagreements) over `workers` processes; print one
    line ("httpay fuzz NAME: N inputs, M AGREED, K disagreements") and the first disagreements; 1 if any."""
    start = time.perf_counter()
    shares = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    jobs = [(f"{seed}:{i}", n) for i, n in enumerate(shares)]
    if workers == 1:
        results = [work(jobs[0])]
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            results = pool.map(work, jobs)
    total = sum(r[0] for r in results)
    both = sum(r[1] for r in results)
    bad = [t for r in results for t in r[2]]
    print(f"httpay fuzz {name}: {total:,} inputs, {both:,} {agreed}, {len(bad):,} disagreements "
          f"({time.perf_counter() - start:.0f} s, seed {seed}, {workers} workers)")
    for text in bad[:10]:
        print(f"DISAGREE {text[:2000]}")
    return 1 if bad else 0
