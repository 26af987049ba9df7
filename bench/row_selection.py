"""Time of one TF-IDF row selection (RowSelector.select), with and without leaving out the rows at idf 0, and of
the fixed-shape selection a training step uses (RowSelector.select_fixed: every row scored, no host sync) against
select with its rows read found first (what a step did before).

A step reads u distinct rows of a 65,536-row layer (u = 50,000, counts 1 to 64, the default study's scale); a quarter
of the table is at idf 0 (read in every background document, as after `smf learn`'s --anchor-reads exclude). "without"
is the selection before that filter (the same scores, thresholded over every row read), "with" is smf's; both are timed
interleaved in one process, and the ratio of their medians is reported; "fixed" and "host" likewise.

Writes bench/results/row_selection.json. Run: .venv/bin/python bench/row_selection.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from smf.io import write_json_atomic
from smf.selection import BackgroundStats, RowSelector

N, U, T = 65536, 50000, 300


def main(repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    df = torch.randint(0, 16, (N,), generator=g)
    df[torch.randperm(N, generator=g)[: N // 4]] = 16
    stats = BackgroundStats(16, {0: df}, {0: df * 3})
    rows = torch.randperm(N, generator=g)[:U].sort().values
    counts = torch.randint(1, 65, (U,), generator=g)
    selector = RowSelector("tfidf", T, stats)
    scores_all = selector.scores

    def unfiltered():  # the former path: scores, then the t-th score's threshold over every row read
        scores = scores_all(0, rows, counts)
        threshold = scores.topk(T).values[-1]
        above = (scores > threshold).nonzero().flatten()
        tied = (scores == threshold).nonzero().flatten()[: T - len(above)]
        return rows[torch.cat([above, tied])].sort().values

    dense = torch.zeros(N, dtype=torch.int64)
    dense[rows] = counts

    def host():  # the rows read found on the host, then ranked
        read = dense.nonzero().flatten()
        return selector.select(0, read, dense[read])

    fixed, valid = selector.select_fixed(0, dense)
    assert torch.equal(fixed[valid], host())
    times = {"without": [], "with": [], "host": [], "fixed": []}
    for _ in range(repeats):
        for name, fn in (("without", unfiltered), ("with", lambda: selector.select(0, rows, counts)), ("host", host),
                         ("fixed", lambda: selector.select_fixed(0, dense))):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {"slots": N, "rows_read": U, "top_t": T, "idf0_fraction": 0.25, "repeats": repeats, "threads": torch.get_num_threads(),
            "median_ms": med, "ratio_with_over_without": med["with"] / med["without"], "ratio_fixed_over_host": med["fixed"] / med["host"]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=200)
    result = main(parser.parse_args().repeats)
    write_json_atomic(Path(__file__).parent / "results" / "row_selection.json", result)
    print(json.dumps(result, indent=2))
