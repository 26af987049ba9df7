"""A study's results: every finished run gathered, changes from base, and the validation choice.

`collect_results` reads each run's result.json and log and writes results.json's
structure: per run its metrics (value, change from base: points for accuracy,
relative % for perplexity, with the paired standard error over items), per setting
the mean and standard deviation over seeds, and per family the setting chosen on
validation data only (`choose_on_validation`).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from smf.evaluate.tasks import resolve_task
from smf.errors import SmfError
from smf.io import MAX_LINE_BYTES, MAX_LOG_BYTES, read_json, read_lines
from smf.names import LOG_FILE, RESULT_FILE
from smf.stats import change_cell, change_stderr, mean_std
from smf.study.config import StudyConfig


def read_log(path: Path, fix: str) -> list[dict]:
    """The records of a finished run's log (bounded as a training log is), its failures as one line ending in `fix`."""
    records = []
    for n, line in read_lines(path, limit=MAX_LOG_BYTES, line_limit=MAX_LINE_BYTES, what="training log", fix=fix):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError, as is an integer past the digit limit
            raise SmfError(f"{path}: line {n} is not valid JSON; {fix}") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise SmfError(f"{path}: line {n} is not a log record; {fix}")
        records.append(record)
    return records


def delta(kind: str, value: float, base: float) -> float:
    """Change from base: points for accuracies, relative % for perplexities."""
    if kind == "perplexity":
        return 100.0 * (value / base - 1.0)
    return 100.0 * (value - base)


def collect_results(config: StudyConfig, out: Path, base: dict) -> dict:
    """Gather every finished run into results.json's structure."""

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
                for rec in read_log(log_file, f"remove {run.folder(out, seed)} to run it again"):
                    if "loss" in rec:
                        curve.append({"step": rec["step"], "loss": rec["loss"]})
                    elif "eval" in rec:
                        curve.append({"step": rec["step"], "eval": {k: v["headline"]["value"] for k, v in rec["eval"].items()}})
            if "curve_final" in r:  # the last point, taken from the final evaluation
                final = r["curve_final"]
                curve.append({"step": final["step"], "eval": {k: v["headline"]["value"] for k, v in final["eval"].items()}})
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
                          **change_cell([r["metrics"][label]["delta"] for r in mine], [t[label] for t in scored[run.label]],
                                        base_tasks[label])}
        for key in ("train_tokens_per_s", "peak_memory_bytes", "optimizer_state_bytes", "train_seconds", "trainable_parameters"):
            row[key] = mean_std([r[key] for r in mine])
        if any(r.get("parameters_trained") is not None for r in mine):
            row["parameters_trained"] = mean_std([r.get("parameters_trained") for r in mine])
        summary.append(row)
    healed = _healed_row(config, out, base_tasks)
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
        "healed": healed,
        "runs": runs,
        "machine": machine(),
    }


def _healed_row(config: StudyConfig, out: Path, base_tasks: dict) -> dict | None:
    """The healed memory model before training (evaluation.healed), as a summary row: its value and change
    from base per task, over the seeds evaluated; None when there is none."""
    found = [read_json(p) for seed in config.seeds if (p := out / "healed" / f"seed{seed}" / RESULT_FILE).is_file()]
    if not found:
        return None
    row = {"label": "healed", "seeds": [r["seed"] for r in found]}
    for label, b in base_tasks.items():
        scored = [r["tasks"][label] for r in found]
        deltas = [delta(t["kind"], t["headline"]["value"], b["headline"]["value"]) for t in scored]
        row[label] = {"value": mean_std([t["headline"]["value"] for t in scored]), **change_cell(deltas, scored, b)}
    return row


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


def machine() -> dict:
    return {
        "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "platform": platform.platform(),
    }
