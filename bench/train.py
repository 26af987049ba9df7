"""Benchmark training: smf, lora and full side by side on the offline default.

1. Training throughput, peak memory and optimizer-state bytes of each method on the
   same data (facts, batch 16, max length 64) and model (SmolLM2-135M-Instruct; for smf
   retrofitted with 3 × 65,536-slot memories (the default study's) at layers 8, 14, 20). Each method runs
   in its own subprocess (so peak RSS is its own), in 5 interleaved rounds; the ratios
   against full finetuning are taken within each round, reported as median and range.
2. The sparse optimizer step (row gradient gather + update) at N = 16K … 1M slots for
   the same t: it should not grow with N. Every size is warmed up first, then the sizes
   are timed in interleaved rounds, so no size gets the cold start.

Writes bench/results/train.json and the "Training" section of BENCHMARKS.md.
Run: .venv/bin/python bench/train.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch

from common import RESULTS, ROOT, machine, median, timed, update_section

METHODS = {
    "smf (tfidf, t=300, lazy Adam)": {"method": "smf", "rule": "tfidf", "top_t": 300, "lr": 1.0},
    "smf (tfidf, t=300, SGD)": {"method": "smf", "rule": "tfidf", "top_t": 300, "optimizer": "sgd"},
    "smf (tfidf, t=300, row-wise Adagrad)": {"method": "smf", "rule": "tfidf", "top_t": 300, "lr": 1.0, "optimizer": "rowwise_adagrad"},
    "lora (r=16, all linear)": {"method": "lora", "lr": 1e-3},
    "full (AdamW)": {"method": "full", "lr": 1e-4},
}


def prepare(folder: Path) -> Path:
    """The retrofitted default model with background statistics, in `folder`."""
    from smf.memory import MemoryConfig, retrofit, save_retrofitted
    from smf.models import load_model
    from smf.train.stages import collect_background
    from smf.data.sources import general_texts
    from smf.data.batching import collate, text_chunks

    model, tokenizer = load_model()
    retrofit(model, MemoryConfig(layers=(8, 14, 20), slots=65536, heads=4, topk=16, key_dim=256))
    path = save_retrofitted(model, tokenizer, folder / "memory_model")
    chunks = text_chunks(general_texts("pydoc"), tokenizer, 128)[:64]
    stats = collect_background(model, [collate(chunks[i : i + 8], tokenizer.pad_token_id) for i in range(0, 64, 8)], progress=False)
    stats.save(path)
    return path


def one_run(settings: dict, memory_dir: str, out: str, steps: int) -> dict:
    """Train one method (in this process) and report its numbers as JSON."""
    from smf.memory import load_retrofitted
    from smf.models import load_model, load_tokenizer, resolve_model
    from smf.data.sources import training_examples
    from smf.train import TrainConfig, train

    config = TrainConfig.from_dict({**settings, "steps": steps, "batch_size": 16, "max_length": 64})
    if config.method == "smf":
        model, tokenizer, model_dir = load_retrofitted(memory_dir), load_tokenizer(memory_dir), Path(memory_dir)
    else:
        model_dir = resolve_model(None)
        model, tokenizer = load_model(model_dir)
    result = train(model, tokenizer, training_examples("facts"), config, out, model_dir=model_dir, save_model=False, progress=False)
    log = [json.loads(line) for line in Path(out, "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    steady = steps[2:]  # the first steps warm up allocators and caches
    s = result.summary
    return {
        "tokens_per_s": sum(r["tokens"] for r in steady) / sum(r["seconds"] for r in steady),
        "first_loss": steps[0]["loss"], "last_loss": sum(r["loss"] for r in steps[-3:]) / 3,
        "peak_rss_bytes": s["peak_memory_bytes"], "optimizer_state_bytes": s["optimizer_state_bytes"],
        "trainable_parameters": s["trainable_parameters"],
    }


def optimizer_scaling(slot_counts: list[int], top_t: int, repeat: int) -> list[dict]:
    """Step time of LazyAdam and SparseSGD with t rows selected, vs table size N.

    Every (size, optimizer) is built and warmed up first; then `repeat` rounds time one step
    of each in turn, so drift over the run (thermal, other load) falls on every size alike.
    """
    from smf.optim import LazyAdam, SparseSGD

    dim, reads = 576, 2048 * 64  # value width; rows read by a batch (tokens × heads·k)
    cases = {}
    for n in slot_counts:
        g = torch.Generator().manual_seed(0)
        for name, make in (("lazy_adam", lambda p: LazyAdam([p], lr=1.0)), ("sgd", lambda p: SparseSGD([p], lr=1.0))):
            values = torch.nn.Parameter(torch.zeros(n, dim))
            opt = make(values)
            index = torch.randint(0, n, (reads,), generator=g)
            grad = torch.sparse_coo_tensor(index[None], torch.randn(reads, dim, generator=g), (n, dim))
            chosen = torch.unique(index)[:top_t]

            def step(values=values, opt=opt, grad=grad, chosen=chosen):
                values.grad = grad
                opt.set_rows({values: chosen})
                opt.step()

            timed(step, repeat=0, warmup=3)
            cases[n, name] = (step, [])
    for _ in range(repeat):
        for (n, name), (step, times) in cases.items():
            times.extend(timed(step, repeat=1, warmup=0))
    rows = []
    for n in slot_counts:
        entry = {"slots": n}
        for name in ("lazy_adam", "sgd"):
            times = cases[n, name][1]
            entry[f"{name}_ms"] = 1e3 * median(times)
            entry[f"{name}_ms_all"] = [1e3 * t for t in times]
        rows.append(entry)
        print(f"N={n:>9,}: lazy Adam {entry['lazy_adam_ms']:.1f} ms, SGD {entry['sgd_ms']:.1f} ms (t={top_t})")
    return rows


def _range(xs: list[float]) -> str:
    return f"{min(xs):.2f}–{max(xs):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one method, print JSON
    parser.add_argument("--memory-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--render", action="store_true", help="rewrite the BENCHMARKS.md section from the JSON")
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_run(json.loads(args.one), args.memory_dir, args.out, args.steps)))
        return
    path = RESULTS / "train.json"
    if args.render:
        result = json.loads(path.read_text())
    else:
        result = measure(1 if args.quick else args.rounds, 5 if args.quick else args.steps, 3 if args.quick else 15)
        from smf.io import write_json_atomic

        RESULTS.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, result)
    body = render(result)
    update_section("Training", body)
    print(body)


def measure(rounds: int, steps: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        memory_dir = prepare(Path(tmp))
        runs = {label: [] for label in METHODS}
        for r in range(rounds):
            for i, (label, settings) in enumerate(METHODS.items()):
                cmd = [sys.executable, __file__, "--one", json.dumps(settings), "--memory-dir", str(memory_dir),
                       "--out", str(Path(tmp) / f"run{r}-{i}-{settings['method']}"), "--steps", str(steps)]
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
                line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    raise SystemExit(f"{label} failed:\n{out.stderr[-3000:]}")
                runs[label].append(json.loads(line[len("RESULT "):]))
                print(label, runs[label][-1], flush=True)
    scaling = optimizer_scaling([16384, 65536, 262144, 1048576], top_t=500, repeat=repeat)
    return {"machine": machine(), "rounds": rounds, "steps": steps, "repeat": repeat, "runs": runs, "optimizer_scaling": scaling}


def _study_state(label: str) -> float | None:
    """The mean optimizer state of `label` in the published controls study (40 steps), if present."""
    path = ROOT / "studies" / "controls" / "results" / "results.json"
    if not path.is_file():
        return None
    row = next((r for r in json.loads(path.read_text())["summary"] if r["label"] == label), None)
    return row["optimizer_state_bytes"]["mean"] if row else None


def render(result: dict) -> str:
    runs, rounds, steps = result["runs"], result["rounds"], result["steps"]
    methods = {label: {k: median([r[k] for r in rs]) for k in rs[0]} for label, rs in runs.items()}
    labels = list(METHODS)
    smf, smf_sgd, smf_row, lora, full = (methods[k] for k in labels)
    full_runs = runs[labels[-1]]

    def vs_full(label: str) -> list[float]:  # the ratio within each round
        return [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(runs[label], full_runs)]

    table = "\n".join(
        f"| {label} | {m['tokens_per_s']:.0f} | {median(vs_full(label)):.2f}× ({_range(vs_full(label))}) | {m['peak_rss_bytes'] / 2**30:.2f} GiB | "
        f"{m['optimizer_state_bytes'] / 2**20:.1f} MiB | {100 * m['optimizer_state_bytes'] / full['optimizer_state_bytes']:.3f}% | "
        f"{int(m['trainable_parameters']):,} | {m['first_loss']:.2f} → {m['last_loss']:.2f} |"
        for label, m in methods.items()
    )
    smf_lora = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(runs[labels[0]], runs[labels[3]])]
    scaling = result["optimizer_scaling"]
    first = scaling[0]
    scale_table = "\n".join(
        f"| {r['slots']:,} | {r['lazy_adam_ms']:.1f} ({_range(r['lazy_adam_ms_all'])}) | {r['lazy_adam_ms'] / first['lazy_adam_ms']:.2f}× | "
        f"{r['sgd_ms']:.1f} ({_range(r['sgd_ms_all'])}) | {r['sgd_ms'] / first['sgd_ms']:.2f}× |"
        for r in scaling
    )
    state_40 = _study_state("smf-tfidf top_t=300")
    longer = (f" (the 40-step controls study's t = 300 runs end at {state_40 / 2**20:.1f} MiB, "
              "studies/controls/results)" if state_40 else "")
    m = result["machine"]
    return f"""
`python bench/train.py` on {m['cores']} CPU cores, torch {m['torch']}, {m['torch_threads']} threads, fp32. Same data
(the `facts` training wordings, batch 16, max length 64, answer-only loss), same steps ({steps}, the first 2
excluded as warm-up), each method in its own process, {rounds} interleaved rounds: medians, and the ratio to full
finetuning taken within each round (median, and in brackets its range over the rounds). Loss: the first step's,
and the mean of the last three.

| method | train tokens/s | vs full | peak RSS | optimizer state | vs full | trainable parameters | loss |
|---|---|---|---|---|---|---|---|
{table}

SMF vs full: **{median(vs_full(labels[0])):.2f}×** tokens/s ({_range(vs_full(labels[0]))} over the rounds; aim ≥ 2×); SMF vs LoRA:
**{median(smf_lora):.2f}×** ({_range(smf_lora)}; aim ≥ 1.3×). SMF optimizer state as allocated:
**{100 * smf['optimizer_state_bytes'] / full['optimizer_state_bytes']:.2f}%** of full finetuning's with lazy Adam,
**{100 * smf_row['optimizer_state_bytes'] / full['optimizer_state_bytes']:.3f}%** with row-wise Adagrad (aim ≤ 0.1%),
{100 * smf_sgd['optimizer_state_bytes'] / full['optimizer_state_bytes']:.2f}% with SGD. Lazy Adam's state is two fp32 moments and a step
count for every row ever selected, in buffers that grow by doubling, plus an (N,) row→slot index per layer: it
grows with the rows touched, not with N, so a longer run holds more{longer}. Row-wise Adagrad holds one fp32 per
row of each table whatever the run. SGD keeps none; over these {steps} steps its loss falls from
{smf_sgd['first_loss']:.2f} to {smf_sgd['last_loss']:.2f}, against {smf['last_loss']:.2f} with lazy Adam and
{smf_row['last_loss']:.2f} with row-wise Adagrad (zero-initialised values: SGD's steps are the raw, small
gradients).

**Sparse optimizer step vs table size** (value width 576, a batch's 131,072 row reads as a sparse gradient,
t = 500 rows updated). Every size warmed up first, then {result['repeat']} interleaved rounds; median (range):

| slots N | lazy Adam step ms | vs 16K | SGD step ms | vs 16K |
|---|---|---|---|---|
{scale_table}

At 1M slots the lazy Adam step takes **{scaling[-1]['lazy_adam_ms'] / first['lazy_adam_ms']:.2f}×** its time at 16K (aim ≤ 1.2×).
"""


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
