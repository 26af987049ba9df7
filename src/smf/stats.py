"""Uncertainty, in one place, so every report tells a real change from noise the same way.

- a score: lm-eval's standard error (sample standard deviation over items / sqrt(n)) and a 95 %
  Wilson score interval, which stays inside [0, 1] and is honest for small sets and accuracies
  near 0 or 1 (on 40 items an accuracy of 0.5 has stderr 0.08: a 5-point change is noise);
- a change from base: the paired standard error over items (accuracies) or a paired bootstrap
  over documents (perplexities), one seed or several (`seeds_change_stderr`);
- a setting's change over seeds (`change_cell`) and its noise (`noise`): the seeds' spread over
  sqrt(seeds) beside the items' share, which does not average away, since every seed scores the
  same items; `within_noise` and `dominates` judge changes by it. The study report, the stream
  report and the learn checks all use these.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

import torch

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of the mean as lm-eval reports it: sample stddev / sqrt(n).
    NaN below two items."""
    n = len(values)
    if n < 2:
        return math.nan
    mu = sum(values) / n
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy(name: str, correct: Sequence[bool]) -> dict:
    """{name, name_stderr, name_ci95} for 0/1 outcomes; JSON-ready (the stderr of a
    single item is None)."""
    n = len(correct)
    assert n > 0, "accuracy of no items"
    k = sum(bool(c) for c in correct)
    stderr = mean_stderr([float(bool(c)) for c in correct])
    return {
        name: k / n,
        f"{name}_stderr": None if math.isnan(stderr) else stderr,
        f"{name}_ci95": list(wilson_interval(k, n)),
    }


def mean_score(name: str, scores: Sequence[float]) -> dict:
    """{name, name_stderr, name_ci95} for scores in [0, 1] (e.g. token F1): the mean, its
    standard error, and a normal 95% interval clipped to [0, 1]."""
    n = len(scores)
    assert n > 0, "mean of no items"
    mu = sum(scores) / n
    stderr = mean_stderr(scores)
    ci = [math.nan, math.nan] if math.isnan(stderr) else [max(0.0, mu - Z95 * stderr), min(1.0, mu + Z95 * stderr)]
    return {name: mu, f"{name}_stderr": None if math.isnan(stderr) else stderr, f"{name}_ci95": ci}


def mean_std(values: list[float | None]) -> dict:
    """{mean, std, n} of the values given (None skipped); std is the sample one, 0 for one value."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def paired_stderr(records: list[dict], base_records: list[dict]) -> float | None:
    """Stderr (in points) of the per-item difference in correctness, items matched by id."""
    return _items_stderr([records], base_records)


def _items_stderr(seeds: list[list[dict]], base_records: list[dict]) -> float | None:
    """Stderr (in points) over items of each item's change in correctness averaged over the seeds'
    records (items matched by id; one seed: the paired standard error)."""
    base = {r["id"]: float(r["correct"]) for r in base_records if "correct" in r}
    scored = [{r["id"]: float(r["correct"]) for r in records if "correct" in r} for records in seeds]
    diffs = [statistics.fmean(s[i] for s in scored) - base[i] for i in scored[0] if i in base and all(i in s for s in scored)]
    if len(diffs) < 2:
        return None
    return 100.0 * statistics.stdev(diffs) / math.sqrt(len(diffs))


PERPLEXITY_UNITS = {"word_perplexity": "words", "token_perplexity": "tokens", "byte_perplexity": "bytes"}


def perplexity_change_stderr(records: list[dict], base_records: list[dict], metric: str, *, rounds: int = 2000,
                             seed: int = 0) -> float | None:
    """Stderr (in %) of the relative change of a perplexity, by a paired bootstrap over documents.

    Documents (matched by id) are drawn with replacement, the same draw for the run and the
    base; each draw's change is 100·(ppl_run/ppl_base - 1) = 100·(exp((ΣLL_base - ΣLL_run)/Σunits) - 1).
    The draws are seeded, so the same records give the same number.
    """
    return _bootstrap_stderr([records], base_records, metric, rounds=rounds, seed=seed)


def _bootstrap_stderr(seeds: list[list[dict]], base_records: list[dict], metric: str, *, rounds: int, seed: int) -> float | None:
    """`perplexity_change_stderr` over one or several seeds' records: the same draw of documents for
    every seed and the base, each draw's change averaged over the seeds."""
    unit = PERPLEXITY_UNITS.get(metric)
    base = {r["id"]: r for r in base_records}
    scored = [{r["id"]: r for r in records if "loglikelihood" in r} for records in seeds]
    ids = [i for i in scored[0] if i in base and all(i in s for s in scored)]
    if unit is None or len(ids) < 2 or any(unit not in scored[0][i] for i in ids):
        return None
    as_tensor = lambda values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
    base_ll = as_tensor([base[i]["loglikelihood"] for i in ids])
    units = as_tensor([float(scored[0][i][unit]) for i in ids])
    draws = torch.randint(len(ids), (rounds, len(ids)), generator=torch.Generator().manual_seed(seed))
    changes = [100 * torch.expm1((base_ll[draws].sum(1) - as_tensor([s[i]["loglikelihood"] for i in ids])[draws].sum(1))
                                 / units[draws].sum(1)) for s in scored]
    return float(torch.stack(changes).mean(0).std())


def change_stderr(task: dict, base_task: dict) -> float | None:
    """The paired standard error of a task's change from base: over items for accuracies
    (points), a bootstrap over documents for perplexities (%)."""
    return seeds_change_stderr([task], base_task)


def seeds_change_stderr(tasks: list[dict], base_task: dict, *, rounds: int = 2000, seed: int = 0) -> float | None:
    """The items' share of the uncertainty of a change averaged over seeds: every seed scores the
    same items, so averaging seeds does not shrink it. Accuracies: the standard error over items of
    each item's change averaged over the seeds (points). Perplexities: a paired bootstrap over
    documents, the same draw for every seed and the base, each draw's change averaged over the
    seeds (%). One task: its paired standard error. None when records are missing."""
    seeds = [t.get("records", []) for t in tasks]
    if tasks[0]["kind"] == "perplexity":
        return _bootstrap_stderr(seeds, base_task.get("records", []), tasks[0]["headline"]["metric"], rounds=rounds, seed=seed)
    return _items_stderr(seeds, base_task.get("records", []))


def change_cell(changes: list[float], tasks: list[dict], base_task: dict) -> dict:
    """A setting's change on one task over its seeds: {"delta": mean_std of the seeds' changes,
    "delta_stderr": the items' share (`seeds_change_stderr` of the seeds' evaluated tasks)}."""
    return {"delta": mean_std(changes), "delta_stderr": seeds_change_stderr(tasks, base_task) if tasks else None}


def noise(cell: dict) -> float:
    """One standard error of a setting's mean change (`cell` as `change_cell` gives it): with several
    seeds, the seed-to-seed standard deviation over sqrt(seeds) combined with the items' share
    (`delta_stderr`: every seed scores the same items, so it does not average away; absent from
    results collected before it was recorded); with one seed the paired standard error; else 0."""
    d = cell["delta"]
    items = cell.get("delta_stderr") or 0.0
    if d["n"] > 1 and d["std"] is not None:
        return math.hypot(d["std"] / math.sqrt(d["n"]), items)
    return items


def within_noise(cell: dict, tolerance: float) -> bool:
    """The mean change lies inside the 95 % interval of its `noise`, or within `tolerance` where
    nothing is known of its noise."""
    spread = noise(cell)
    return abs(cell["delta"]["mean"]) <= (Z95 * spread if spread > 0 else tolerance)


def dominates(s: dict, o: dict, task: str, probes: list[str]) -> bool:
    """Setting `s` Pareto-dominates `o` beyond noise (rows of cells by task label): a gain and every
    probe's drift no worse than `o`'s (means), and better than `o`'s by more than two combined
    standard errors on at least one."""
    axes = [(s[task]["delta"]["mean"], o[task]["delta"]["mean"], task)]
    axes += [(-abs(s[p]["delta"]["mean"]), -abs(o[p]["delta"]["mean"]), p) for p in probes]
    no_worse, better = True, False
    for mine, theirs, label in axes:
        margin = 2 * math.hypot(noise(s[label]), noise(o[label]))
        no_worse &= mine >= theirs
        better |= mine > theirs + margin
    return no_worse and better
