"""The device check: on a machine with a GPU, confirm that SMF trains there and measure it.

One script, a few minutes on one GPU (issue 15: "a short run confirms that single-GPU, and
with several GPUs NCCL multi-GPU, SMF steps work, and records tokens/s for the three methods
at Qwen2.5-0.5B geometry"). In order, each part recorded as it finishes:

1. `sync_free`: a recorded forward and backward of a memory layer on the GPU and its read
   counts, under `torch.cuda.set_sync_debug_mode("error")` (any host sync raises);
2. `bf16_evaluation`: `evaluate(..., mixed_precision="auto")` on the GPU runs its linear
   layers in bf16 (perplexity and multiple choice at Qwen2.5-0.5B geometry, random weights,
   with fp32 beside it: the time, and how far the scores move);
3. `train`: `smf train` for smf (TF-IDF, t = 512, lazy Adam), lora and full finetuning at
   Qwen2.5-0.5B-Instruct's exact geometry (random weights, memory 3 × 16,384 slots at layers
   6, 12, 18 as in the published study) in one process: tokens/s, the CUDA allocator's peak,
   optimizer state; with two or more GPUs also in two processes (torchrun, NCCL), with the
   all-reduce payload per step.

Writes bench/results/gpu.json and the "On a GPU" section of BENCHMARKS.md. Without a GPU it
says so and exits 3, writing nothing. Run: .venv/bin/python bench/gpu.py [--steps 8]
(`--allow-cpu --out DIR` runs the same parts on the CPU, writing only DIR/gpu.json: a check of
the script itself, not a GPU measurement).

Every model here has random weights, so only a tokenizer must travel: on a lent machine that
cannot install smf or reach a hub, copy the default model's tokenizer files (tokenizer.json,
tokenizer_config.json, chat_template.jinja from ~/.cache/smf/models/smollm2-135m-instruct, about
3.5 MB) into a folder, and run `PYTHONPATH=src python3 bench/gpu.py --tokenizer FOLDER` with the
machine's own torch, transformers, accelerate and peft.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from common import RESULTS, ROOT, machine, update_section

sys.path.insert(0, str(ROOT / "src"))


def _part(result: dict, name: str, fn) -> None:
    """Run one part; record its result or its error, and keep going."""
    start = time.perf_counter()
    try:
        result[name] = {"ok": True, **fn()}
    except Exception as e:  # a failed part is a finding, not the end of the check
        result[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
    result[name]["seconds"] = round(time.perf_counter() - start, 1)
    print(name, json.dumps({k: v for k, v in result[name].items() if k != "trace"})[:800], flush=True)


def sync_free(device) -> dict:
    import torch

    from smf.memory import MemoryConfig, ProductKeyMemory

    memory = ProductKeyMemory(896, MemoryConfig(layers=[0], slots=16384, heads=4, topk=16, key_dim=256))
    memory.to_empty(device=device)
    memory.reset_parameters()
    memory.record = True
    memory.token_mask = torch.ones(4, 256, dtype=torch.long, device=device)
    memory.token_mask[1, 200:] = 0
    x = torch.randn(4, 256, 896, device=device, requires_grad=True)
    memory(x)  # warm-up outside the check (kernel selection may query the device)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        out = memory(x)
        counts = memory.read_counts()
        out.float().pow(2).mean().backward()
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
    real = int(memory.token_mask.sum())
    return {"checked_with": "torch.cuda.set_sync_debug_mode('error')" if cuda else "nothing (CPU)",
            "reads_counted": int(counts.sum()), "reads_expected": real * 4 * 16}


def bf16_evaluation(device, tokenizer_dir: str | None) -> dict:
    import torch
    from torch import nn

    from distributed import geometry_model
    from smf.evaluate import evaluate, load_task

    model, tokenizer = geometry_model("qwen2.5-0.5b", tokenizer_dir)
    model = model.to(device).eval()
    tasks = [load_task({"name": "pydoc", "limit": 4}), load_task({"name": "facts-control", "limit": 40})]
    seen = set()
    hooks = [m.register_forward_hook(lambda mod, a, out: seen.add(str(out.dtype))) for m in model.modules() if isinstance(m, nn.Linear)]
    out = {}
    try:
        for precision in ("auto", "no"):
            seen.clear()
            start = time.perf_counter()
            r = evaluate(model, tokenizer, tasks, progress=False, records=False, mixed_precision=precision)["tasks"]
            out[precision] = {"linear_dtypes": sorted(seen), "seconds": round(time.perf_counter() - start, 2),
                              **{label: t["headline"]["value"] for label, t in r.items()}}
    finally:
        for h in hooks:
            h.remove()
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def train(steps: int, batch_size: int, gpus: int, folder: Path, tokenizer_dir: str | None) -> dict:
    from distributed import METHODS, prepare, run

    plain, memory, parameters = prepare("qwen2.5-0.5b", folder, tokenizer_dir)
    rows = {}
    for label, flags in METHODS.items():
        model = memory if flags[1] == "smf" else plain
        common = ["train", "--model", str(model), "--data", "facts", *flags, "--steps", str(steps),
                  "--batch-size", str(batch_size), "--max-length", "64", "--checkpoint-every", "0"]
        rows[label] = {}
        for n in (1, 2) if gpus >= 2 else (1,):
            try:
                rows[label][f"{n} process{'es' if n > 1 else ''}"] = run(common, n, folder / f"{label[:4]}-{n}")
            except SystemExit as e:  # run() raises SystemExit with the command's stderr
                rows[label][f"{n} process{'es' if n > 1 else ''}"] = {"error": str(e)[-1500:]}
            print("train", label, n, json.dumps(rows[label]), flush=True)
    return {"geometry": "qwen2.5-0.5b", "parameters": parameters, "steps": steps, "batch_size": batch_size, "methods": rows}


def render(result: dict) -> str:
    m = result["machine"]
    lines = [f"`python bench/gpu.py` on {m['cuda'] or 'no GPU'} ({result['gpus']} GPU(s)), torch {m['torch']}; "
             "one run of each part. `smf train` gives tokens/s over the steps after the first two and the CUDA "
             "allocator's peak (`peak_memory_bytes`).", ""]
    s = result.get("sync_free", {})
    lines.append(f"- Host syncs in a recorded memory forward, read counts and backward ({s.get('checked_with', '-')}): "
                 + ("none" if s.get("ok") else f"**{s.get('error', 'not run')}**") + ".")
    b = result.get("bf16_evaluation", {})
    if b.get("ok"):
        auto, full = b["auto"], b["no"]
        lines.append(f"- Evaluation with `mixed_precision: auto`: linear layers in {', '.join(auto['linear_dtypes'])} "
                     f"({auto['seconds']} s; fp32 {full['seconds']} s; random weights, Qwen2.5-0.5B geometry): pydoc word perplexity "
                     f"{auto['pydoc']:.3f} vs fp32 {full['pydoc']:.3f}, facts-control accuracy {auto['facts-control']:.3f} vs "
                     f"{full['facts-control']:.3f}.")
    else:
        lines.append(f"- bf16 evaluation: **{b.get('error', 'not run')}**.")
    t = result.get("train", {})
    if t.get("ok"):
        lines += ["", f"Training at Qwen2.5-0.5B geometry ({t['parameters'] / 1e6:.0f}M parameters before the memory), "
                      f"{t['steps']} steps of {t['batch_size']} facts, max length 64:", "",
                  "| method | processes | tokens/s | peak memory | optimizer state | all-reduce payload / step |", "|---|---|---|---|---|---|"]
        for label, runs in t["methods"].items():
            for n, r in runs.items():
                if "error" in r:
                    lines.append(f"| {label} | {n} | failed: {r['error'].splitlines()[-1][:120]} | | | |")
                else:
                    lines.append(f"| {label} | {n} | {r['tokens_per_s']:.0f} | {r['peak_rss_bytes'] / 2**30:.2f} GiB | "
                                 f"{r['optimizer_state_bytes'] / 2**20:.1f} MiB | {r['allreduce_bytes_per_step'] / 2**20:.2f} MiB |")
    else:
        lines.append(f"- Training: **{t.get('error', 'not run')}**.")
    return "\n".join(lines)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--allow-cpu", action="store_true", help="run the parts on the CPU (a check of this script)")
    parser.add_argument("--out", help="write gpu.json here instead of bench/results (and leave BENCHMARKS.md alone)")
    parser.add_argument("--parts", default="sync_free,bf16_evaluation,train")
    parser.add_argument("--tokenizer", help="a folder with the tokenizer to use (default: smf's default model's)")
    parser.add_argument("--render", action="store_true", help="rewrite the BENCHMARKS.md section from bench/results/gpu.json")
    args = parser.parse_args()
    if args.render:
        update_section("On a GPU", render(json.loads((RESULTS / "gpu.json").read_text())))
        return
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not gpus and not args.allow_cpu:
        print("no GPU here (torch.cuda.is_available() is False): nothing measured, nothing written", file=sys.stderr)
        raise SystemExit(3)
    if not gpus and not args.out:
        raise SystemExit("--allow-cpu needs --out DIR: a CPU run is not a GPU measurement and does not go to bench/results")
    device = "cuda" if gpus else "cpu"
    result = {"machine": machine(), "gpus": gpus}
    parts = args.parts.split(",")
    if "sync_free" in parts:
        _part(result, "sync_free", lambda: sync_free(device))
    if "bf16_evaluation" in parts:
        _part(result, "bf16_evaluation", lambda: bf16_evaluation(device, args.tokenizer))
    if "train" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            _part(result, "train", lambda: train(args.steps, args.batch_size, gpus, Path(tmp), args.tokenizer))
    from smf.io import write_json_atomic

    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "gpu.json", result)
    body = render(result)
    if not args.out:
        update_section("On a GPU", body)
    print(body)


if __name__ == "__main__":
    main()
