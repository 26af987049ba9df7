"""How far does one seed's result move under float noise alone? The same study run at another thread count.

Takes a study folder with a finished run (trained at this machine's default torch thread count),
trains and evaluates the same run again (same config, seed, memory model and background) at
`--threads` torch threads in `--out`, and compares, task by task, the change from base of the two:
the difference, the items answered differently, and the paired standard error of the change that
the report states. Writes the comparison to `--json` (atomically).

    .venv/bin/python scripts/experiments/thread_spread.py runs/offline-independent smf-tfidf \
        --threads 1 --out runs/thread-spread --json docs/results/thread-spread.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", type=Path, help="a study folder holding the finished run")
    p.add_argument("label", help="the run's label in the study, e.g. smf-tfidf")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads for the second run (default %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="where the second run goes (resumes if it is there)")
    p.add_argument("--json", type=Path, required=True, help="the comparison, written atomically")
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    import torch

    from smf.data.sources import training_examples
    from smf.evaluate.tasks import load_task
    from smf.io import read_json, write_json_atomic
    from smf.models import resolve_model
    from smf.study.config import StudyConfig
    from smf.study.results import RESULT_FILE, change_stderr, delta, paired_stderr
    from smf.study.runner import STUDY_FILE, _train_and_evaluate

    torch.set_num_threads(args.threads)
    config = StudyConfig.from_dict(read_json(args.study / STUDY_FILE), where=str(args.study / STUDY_FILE))
    run = next((r for r in config.runs() if r.label == args.label), None)
    if run is None:
        print(f"error: {args.study} has no run {args.label!r}; its runs: {', '.join(r.label for r in config.runs())}",
              file=sys.stderr)
        return 2
    reference = run.folder(args.study, args.seed) / RESULT_FILE
    memory_dir = args.study / "memory_model"
    if not reference.is_file() or not (args.study / "base" / RESULT_FILE).is_file():
        print(f"error: {reference} or the study's base result is missing; finish the study first", file=sys.stderr)
        return 2
    tasks = {t.label: t for t in (load_task(s) for s in config.eval_specs())}
    _train_and_evaluate(config, run, args.seed, resolve_model(config.model), memory_dir if memory_dir.is_dir() else None,
                        tasks, training_examples(config.data), args.out, progress=True)

    base = read_json(args.study / "base" / RESULT_FILE)["tasks"]
    runs = {"reference": read_json(reference)["tasks"], "threads": read_json(run.folder(args.out, args.seed) / RESULT_FILE)["tasks"]}
    study_results = args.study / "results.json"  # the machine the study's runs were collected on
    machine = read_json(study_results).get("machine", {}) if study_results.is_file() else {}
    losses = [[json.loads(line)["loss"] for line in (folder / "log.jsonl").read_text().splitlines() if '"loss"' in line]
              for folder in (reference.parent, run.folder(args.out, args.seed))]
    out = {"study": str(args.study), "run": args.label, "seed": args.seed,
           "reference_threads": machine.get("torch_threads"), "threads": args.threads, "torch": torch.__version__,
           "steps": len(losses[0]), "losses_bit_identical": sum(a == b for a, b in zip(*losses)),
           "largest_loss_difference": max((abs(a - b) for a, b in zip(*losses)), default=None), "tasks": {}}
    for label, b in base.items():
        ref, other = runs["reference"][label], runs["threads"][label]
        kind, unit = b["kind"], ("%" if b["kind"] == "perplexity" else "points")
        changes = [delta(kind, t["headline"]["value"], b["headline"]["value"]) for t in (ref, other)]
        row = {"kind": kind, "unit": unit, "n": b["n"], "change_reference": changes[0], "change_threads": changes[1],
               "difference": changes[1] - changes[0], "change_stderr": change_stderr(ref, b)}
        if kind != "perplexity":
            right = {r["id"]: r["correct"] for r in ref["records"]}
            row["items_flipped"] = sum(r["correct"] != right[r["id"]] for r in other["records"])
            row["paired_stderr_between_runs"] = paired_stderr(other["records"], ref["records"])
        row["within_one_stderr"] = row["change_stderr"] is None or abs(row["difference"]) <= row["change_stderr"]
        out["tasks"][label] = row
        print(f"{label:16s} {changes[0]:+8.3f} → {changes[1]:+8.3f} {unit:6s} difference {row['difference']:+.3f}"
              f"  (paired SE of the change {row['change_stderr'] if row['change_stderr'] is not None else float('nan'):.3f})")
    write_json_atomic(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
