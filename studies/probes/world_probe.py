"""Experiment: the world-knowledge probe on the default model, and how finely it resolves a change.

Evaluates the base model on both halves of the probe (`world`, `world-val`: 400 questions each,
chat template, substring match), then trains one SMF run as the sweep's chosen setting does
(TF-IDF, t = 300, lr 1.0, 40 steps of 16 facts, seed 0) on a retrofitted folder with
background statistics, evaluates it on the reported half, and reports per half and per kind: base
accuracy, its standard error, and (on `world`) the run's change and the paired standard error
of that change.

Writes DIR/base.json, DIR/run/, DIR/run.json and studies/probes/results/world-probe.json (the summary).
Run: .venv/bin/python studies/probes/world_probe.py DIR MEMORY_FOLDER
(MEMORY_FOLDER: e.g. runs/offline-controls/memory_model, written by `smf compare`.)
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMF = [sys.executable, "-m", "smf"]
TASKS = "world,world-val"  # the base model on both halves
RUN_TASKS = "world"  # the trained run on the reported half (each half is ~7 minutes of generation here)


def run(*args: str) -> None:
    print("$ smf " + " ".join(args), flush=True)
    subprocess.run([*SMF, *args], check=True, cwd=ROOT)


def summary(base: dict, trained: dict) -> dict:
    from smf.stats import paired_stderr

    out = {}
    for label, task in base["tasks"].items():
        mine = trained["tasks"].get(label)
        groups = {"all": None, **{k: k for k in ("capital", "continent", "currency", "city")}}
        out[label] = {}
        for name, kind in groups.items():
            keep = (lambda r: True) if kind is None else (lambda r, kind=kind: r["id"].startswith(f"world-{kind}-"))
            b = [r for r in task["records"] if keep(r)]
            if not b:
                continue
            p = sum(r["correct"] for r in b) / len(b)
            out[label][name] = {"items": len(b), "base_accuracy": 100 * p, "base_stderr": 100 * math.sqrt(p * (1 - p) / len(b))}
            if mine is not None:
                t = [r for r in mine["records"] if keep(r)]
                out[label][name].update({
                    "run_accuracy": 100 * sum(r["correct"] for r in t) / len(t),
                    "change": 100 * (sum(r["correct"] for r in t) - sum(r["correct"] for r in b)) / len(b),
                    "paired_stderr": paired_stderr(t, b),
                })
    return out


def main(folder: Path, memory: Path) -> None:
    from smf.io import write_json_atomic

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "base.json").is_file():
        run("eval", "--model", "default", "--tasks", TASKS, "--out", str(folder / "base.json"))
    if not (folder / "run" / "model").exists():
        run("train", "--model", str(memory), "--data", "facts", "--method", "smf", "--rule", "tfidf", "--top-t", "300",
            "--lr", "1.0", "--steps", "40", "--batch-size", "16", "--max-length", "64", "--max-grad-norm", "1.0",
            "--seed", "0", "--out", str(folder / "run"))
    if not (folder / "run.json").is_file():
        run("eval", "--model", str(folder / "run" / "model"), "--tasks", RUN_TASKS, "--out", str(folder / "run.json"))
    base, trained = (json.loads((folder / f).read_text()) for f in ("base.json", "run.json"))
    result = {"setting": "smf-tfidf t=300, lr 1.0, 40 steps of 16 facts, seed 0", "memory_folder": str(memory),
              "probe": summary(base, trained)}
    out = Path(__file__).resolve().parent / "results" / "world-probe.json"
    write_json_atomic(out, result)
    for label, groups in result["probe"].items():
        for name, g in groups.items():
            run_part = (f"  run {g['run_accuracy']:5.1f}  change {g['change']:+5.1f} (paired SE {g['paired_stderr'] or 0:.1f})"
                        if "change" in g else "")
            print(f"{label:10} {name:10} n={g['items']:3}  base {g['base_accuracy']:5.1f} ± {g['base_stderr']:.1f}" + run_part)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: world_probe.py DIR MEMORY_FOLDER")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
