"""Optimizer state of SMF's optimizers against full finetuning's, on the default study's run.

The offline default retrofitted as the default study does (memory at layers 8, 14, 20, 3 × 65,536
slots of 576), background statistics as the study counts them, then the study's SMF-TF-IDF run
(facts data, 40 steps of 16, t = 300, lr 1.0) once per optimizer; the number is each run's
`optimizer_state_bytes` (every tensor the optimizer holds at the end). Full finetuning's AdamW
holds two fp32 moments per model parameter (counted from the model).

Writes bench/results/optimizer_state.json and the "Optimizer state" section of BENCHMARKS.md.
Run: .venv/bin/python bench/optimizer_state.py [WORK_DIR]   (about 6 minutes on 2 CPU cores)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from common import RESULTS, machine, update_section

OPTIMIZERS = ("adam", "rowwise_adagrad", "sgd")


def main() -> None:
    from smf.cli import main as smf

    work = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="smf-optstate-"))
    retro = work / "retro"
    if not (retro / "background.safetensors").is_file():
        assert smf(["retrofit", "--layers", "8,14,20", "--slots", "65536", "--heads", "4", "--topk", "16", "--key-dim", "256",
                    "--out", str(retro)]) == 0
        assert smf(["background", "--model", str(retro), "--batches", "16", "--batch-size", "8", "--max-length", "128"]) == 0
    results = {}
    for name in OPTIMIZERS:
        out = work / name
        if not (out / "summary.json").is_file():
            assert smf(["train", "--model", str(retro), "--method", "smf", "--rule", "tfidf", "--top-t", "300", "--optimizer", name,
                        "--lr", "2.0" if name == "sgd" else "1.0", "--data", "facts:n_facts=60,n_control=40,train_wordings=8",
                        "--steps", "40", "--batch-size", "16", "--max-length", "64", "--out", str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        results[name] = {k: summary.get(k) for k in ("optimizer_state_bytes", "rows_trained", "final_loss")}
    from smf.models import load_model

    params = sum(p.numel() for p in load_model()[0].parameters())
    full = 2 * 4 * params
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "optimizer_state.json").write_text(json.dumps({"results": results, "full_finetuning_adamw_bytes": full,
                                                              "model_parameters": params, "machine": machine()}, indent=2) + "\n")
    rows = [f"| {name} | {r['optimizer_state_bytes'] / 2**20:,.2f} MiB | {100 * r['optimizer_state_bytes'] / full:.3f} % | "
            f"{r['rows_trained']:,} | {r['final_loss']:.3f} |" for name, r in results.items()]
    body = (
        "The default study's SMF-TF-IDF run (3 tables of 65,536 × 576, 40 steps of 16, t = 300) with each "
        "strictly sparse optimizer, against full finetuning's AdamW (two fp32 moments for each of the model's "
        f"{params:,} parameters: {full / 2**20:,.1f} MiB). State = every tensor the optimizer holds at the end "
        "(`bench/optimizer_state.py`, `bench/results/optimizer_state.json`); one run each:\n\n"
        "| optimizer | state | of full finetuning's | rows trained | final loss |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Row-wise Adagrad keeps one fp32 per row whatever the run; LazyAdam keeps an int64 index per row and two "
        "moments per row ever selected, in buffers that grow by doubling. How they learn and forget on the study, "
        "3 seeds each: studies/optimizers/README.md."
    )
    update_section("Optimizer state", body)
    print(body)


if __name__ == "__main__":
    main()
