"""A study's results: every finished run gathered, changes from base, and the validation choice.

`collect_results` reads each run's result.json and log and writes results.json's
structure: per run its metrics (value, change from base: points for accuracy,
relative % for perplexity, with the paired standard error over items), per setting
the mean and standard deviation over seeds, and per family the setting chosen on
validation data only (`choose_on_validation`).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import torch

from smf.io import read_json
from smf.study.config import StudyConfig
from smf.train.loop import LOG_FILE

RESULT_FILE = "result.json"


def delta(kind: str, value: float, base: float) -> float:
    """Change from base: points for accuracies, relative % for perplexities."""
    if kind == "perplexity":
        return 100.0 * (value / base - 1.0)
    return 100.0 * (value - base)


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


def mean_std(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def collect_results(config: StudyConfig, out: Path, base: dict) -> dict:
    """Gather every finished run into results.json's structure."""
    from smf.evaluate.tasks import resolve_task

    def label(spec) -> str:
        return resolve_task(spec).label

    ev, val = config.evaluation, config.validation
    task_label = label(ev.task)
    probe_labels = [label(p) for p in ev.probes]
    extra_labels = [label(t) for t in ev.extra_tasks]
    validation_task = label(val.task) if val.task is not None else None
    validation_probes = [label(p) for p in val.probes]
    base_tasks = base["tasks"]
    runs = []
    scored: dict[str, list[dict]] = {}  # a setting's evaluated tasks, one per seed (for the items' uncertainty)
    for run in config.runs():
        for seed in config.seeds:
            path = run.folder(out, seed) / RESULT_FILE
            if not path.is_file():
                continue
            r = read_json(path)
            scored.setdefault(run.label, []).append(r["tasks"])
            metrics = {}
            for label, t in r["tasks"].items():
                b = base_tasks[label]
                kind, value, base_value = t["kind"], t["headline"]["value"], b["headline"]["value"]
                metrics[label] = {
                    "metric": t["headline"]["metric"], "kind": kind, "value": value, "stderr": t["headline"]["stderr"],
                    "base": base_value, "delta": delta(kind, value, base_value),
                    "delta_unit": "%" if kind == "perplexity" else "pp",
                    "delta_stderr": change_stderr(t, b),
                    "n": t["n"],
                }
            s = r["summary"]
            curve = []
            log_file = run.folder(out, seed) / LOG_FILE
            if log_file.is_file():
                for line in log_file.read_text().splitlines():
                    rec = json.loads(line)
                    if "loss" in rec:
                        curve.append({"step": rec["step"], "loss": rec["loss"]})
                    elif "eval" in rec:
                        curve.append({"step": rec["step"], "eval": {k: v["headline"]["value"] for k, v in rec["eval"].items()}})
            runs.append({
                "label": r["label"], "family": r["family"], "seed": seed, "settings": r["settings"], "metrics": metrics,
                "trainable_parameters": s["trainable_parameters"], "train_tokens_per_s": s["train_tokens_per_s"],
                "peak_memory_bytes": s["peak_memory_bytes"], "optimizer_state_bytes": s["optimizer_state_bytes"],
                "train_seconds": s["train_seconds"], "wall_seconds": r["wall_seconds"], "eval_seconds": r["eval_seconds"],
                "final_loss": s["final_loss"], "curve": curve, "train_config": r["train_config"],
                "parameters_trained": s.get("parameters_trained"), "rows_trained": s.get("rows_trained"),
            })
    summary = []
    for run in config.runs():
        mine = [r for r in runs if r["label"] == run.label]
        if not mine:
            continue
        row = {"label": run.label, "family": run.family.label, "settings": run.settings, "seeds": [r["seed"] for r in mine]}
        for label in mine[0]["metrics"]:
            row[label] = {"value": mean_std([r["metrics"][label]["value"] for r in mine]),
                          "delta": mean_std([r["metrics"][label]["delta"] for r in mine]),
                          "delta_stderr": (mine[0]["metrics"][label]["delta_stderr"] if len(mine) == 1 else
                                           seeds_change_stderr([t[label] for t in scored[run.label]], base_tasks[label]))}
        for key in ("train_tokens_per_s", "peak_memory_bytes", "optimizer_state_bytes", "train_seconds", "trainable_parameters"):
            row[key] = mean_std([r[key] for r in mine])
        if any(r.get("parameters_trained") is not None for r in mine):
            row["parameters_trained"] = mean_std([r.get("parameters_trained") for r in mine])
        summary.append(row)
    chosen = (choose_on_validation(summary, validation_task, validation_probes, config.tolerance, val.min_gain)
              if validation_task else {})
    base_curve = {k: v["headline"]["value"] for k, v in base.get("curve", {}).items()}
    return {
        "study": config.name,
        "config": config.to_dict(),
        "task": task_label, "probes": probe_labels, "extra_tasks": extra_labels, "tolerance": config.tolerance,
        "validation": {"task": validation_task, "probes": validation_probes, "min_gain": val.min_gain, "chosen": chosen},
        "base": {label: {"metric": t["headline"]["metric"], "kind": t["kind"], "value": t["headline"]["value"],
                         "stderr": t["headline"]["stderr"], "n": t["n"]} for label, t in base_tasks.items()},
        "base_curve": base_curve,
        "summary": summary,
        "runs": runs,
        "machine": _machine(),
    }


def choose_on_validation(summary: list[dict], task: str, probes: list[str], tolerance: float,
                          min_gain: float | None = None) -> dict[str, str]:
    """Per family with several settings, the setting chosen on validation data only.

    Without `min_gain`: the best mean validation-task score among settings whose
    validation probes all drift at most `tolerance` from base; if no setting qualifies,
    the smallest worst drift. With `min_gain` (points): the smallest worst drift among
    settings whose mean validation-task gain is at least `min_gain`; if none gains that
    much, the largest gain. Ties go to the earlier setting in the config.
    """
    chosen = {}
    families: dict[str, list[dict]] = {}
    for row in summary:
        families.setdefault(row["family"], []).append(row)
    for family, rows in families.items():
        if len(rows) < 2:
            continue

        def worst_drift(row):
            return max((abs(row[p]["delta"]["mean"]) for p in probes), default=0.0)

        def gain(row):
            return row[task]["delta"]["mean"]

        if min_gain is not None:
            enough = [r for r in rows if gain(r) >= min_gain]
            best = min(enough, key=worst_drift) if enough else max(rows, key=gain)
        else:
            within = [r for r in rows if worst_drift(r) <= tolerance]
            best = max(within, key=lambda r: r[task]["value"]["mean"]) if within else min(rows, key=worst_drift)
        chosen[family] = best["label"]
    return chosen


def _machine() -> dict:
    import os
    import platform

    return {
        "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "platform": platform.platform(),
    }
