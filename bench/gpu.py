"""The device check: on a machine with a GPU, confirm that SMF trains there and measure it.

One script, a few minutes on one GPU (issue 15: "a short run confirms that single-GPU, and
with several GPUs NCCL multi-GPU, SMF steps work, and records tokens/s for the three methods
at Qwen2.5-0.5B geometry"). In order, each part recorded as it finishes:

1. `sync_free`: a recorded forward and backward of a memory layer on the GPU and its read
   counts, and an SMF step (selection and lazy Adam), under `torch.cuda.set_sync_debug_mode("error")`
   (any host sync raises);
2. `bf16_evaluation`: `evaluate(..., mixed_precision="auto")` on the GPU runs its linear
   layers in bf16 (perplexity and multiple choice at Qwen2.5-0.5B geometry, random weights,
   with fp32 beside it: the time, and how far the scores move);
3. `train`: `smf train` for smf (TF-IDF, t = 512, lazy Adam), lora and full finetuning at
   Qwen2.5-0.5B-Instruct's exact geometry (random weights, memory 3 × 16,384 slots at layers
   6, 12, 18 as in the published study) in one process: tokens/s, the CUDA allocator's peak,
   optimizer state; with two or more GPUs also in two processes (torchrun, NCCL), with the
   all-reduce payload per step. Then smf alone at 3 × 1,048,576 slots (`--slots`).

Writes bench/results/gpu.json and the "On a GPU" section of BENCHMARKS.md. Without a GPU it
says so and exits 3, writing nothing. Run: .venv/bin/python bench/gpu.py [--steps 8]
(`--allow-cpu --out DIR` runs the same parts on the CPU, writing only DIR/gpu.json: a check of
the script itself, not a GPU measurement).

Every model here has random weights, so only a tokenizer must travel: on a lent machine that
cannot install smf or reach a hub, copy the default model's tokenizer files and its config
(tokenizer.json, tokenizer_config.json, chat_template.jinja and config.json from
~/.cache/smf/models/smollm2-135m-instruct, about 3.5 MB) into a folder, and run `PYTHONPATH=src python3 bench/gpu.py --tokenizer FOLDER` with the
machine's own torch, transformers, accelerate and peft. `scripts/gpu_tests.sh FOLDER $OUT` runs the
quick tests there the same way (on a GPU they train and evaluate on it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
    memory.reset_parameters()  # initialises on the CPU (the same numbers on every device)
    memory.to(device)
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
            "reads_counted": int(counts.sum()), "reads_expected": real * 4 * 16, "smf_step": smf_step_sync_free(device)}


def smf_step_sync_free(device) -> dict:
    """An SMF step (selection of the top-t rows per layer, lazy Adam with clipping) on a small retrofitted model,
    its second step under the sync check (the first grows lazy Adam's buffers, which waits once)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from smf.memory import MemoryConfig, retrofit
    from smf.methods import TrainConfig, make_method
    from smf.selection import BackgroundStats

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2))
    model = retrofit(model, MemoryConfig(layers=[1, 3], slots=16384, heads=4, topk=16, key_dim=64)).to(device)
    background = BackgroundStats.empty({1: 16384, 3: 16384})
    background.add_counts({1: torch.randint(0, 3, (16384,)), 3: torch.randint(0, 3, (16384,))})
    method = make_method(TrainConfig.from_dict({"method": "smf", "steps": 2, "batch_size": 4, "rule": "tfidf", "top_t": 512,
                                                "max_grad_norm": 1e-3}))
    method.background = background
    model = method.prepare(model.train(), None)
    optimizer = method.make_optimizer(model)
    ids = torch.randint(3, 512, (4, 64), device=device)
    cuda = torch.device(device).type == "cuda"
    for step in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
        method.after_forward(model)
        if cuda and step == 1:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            method.before_step(model, optimizer)
            optimizer.step()
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
        optimizer.zero_grad(set_to_none=True)
    return {"rows_selected": method.step_stats(optimizer)["rows_selected"]}


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


def train(steps: int, batch_size: int, gpus: int, folder: Path, tokenizer_dir: str | None, slots: list[int], saved) -> dict:
    """The three methods, then smf again at each further slot count in `slots` (the first is
    the published study's 16,384); `saved(partial)` after each row, so a run cut short keeps
    what it measured."""
    from distributed import METHODS, prepare, run

    plain, memory, parameters = prepare("qwen2.5-0.5b", folder, tokenizer_dir, slots=slots[0])
    rows = {}
    partial = {"geometry": "qwen2.5-0.5b", "parameters": parameters, "steps": steps, "batch_size": batch_size, "methods": rows,
               "warm_up": True}
    jobs = [(label, flags, memory if flags[1] == "smf" else plain) for label, flags in METHODS.items()]
    smf_label, smf_flags = next((label, flags) for label, flags in METHODS.items() if flags[1] == "smf")
    for n_slots in slots[1:]:
        jobs.append((smf_label.replace("(", f"({n_slots:,} slots, ", 1), smf_flags, ("prepare", n_slots)))
    # The first process on a fresh machine paid 2-2.7 s for two of its steps (2026-11-30, smf first; no later
    # process did): a short run first, not recorded, so that the rows compare the methods and not their order.
    try:
        run(["train", "--model", str(memory), "--data", "facts", *smf_flags, "--steps", "4", "--batch-size", str(batch_size),
             "--max-length", "64", "--checkpoint-every", "0"], 1, folder / "warm-up")
    except SystemExit as e:
        print("warm-up run failed:", str(e)[-500:], flush=True)
    for index, (label, flags, model) in enumerate(jobs):
        if isinstance(model, tuple):  # retrofit the geometry again with more slots, only when it is reached
            try:
                _, model, _ = prepare("qwen2.5-0.5b", folder / f"slots{model[1]}", tokenizer_dir, slots=model[1])
            except Exception as e:  # a row's failure is recorded as the row's, and the rows so far are kept
                rows[label] = {"1 process": {"error": f"{type(e).__name__}: {e}"}}
                continue
        common = ["train", "--model", str(model), "--data", "facts", *flags, "--steps", str(steps),
                  "--batch-size", str(batch_size), "--max-length", "64", "--checkpoint-every", "0"]
        rows[label] = {}
        for n in (1, 2) if gpus >= 2 else (1,):
            try:
                rows[label][f"{n} process{'es' if n > 1 else ''}"] = run(common, n, folder / f"run{index}-{n}")
            except SystemExit as e:  # run() raises SystemExit with the command's stderr
                rows[label][f"{n} process{'es' if n > 1 else ''}"] = {"error": str(e)[-1500:]}
            print("train", label, n, json.dumps(rows[label]), flush=True)
            saved({"ok": False, "error": "cut short: the rows so far", **partial})
    return partial


PHASES = ("train/forward", "train/backward", "train/before_step", "train/clip", "train/optimizer")


def profile(device, folder: Path, tokenizer_dir: str | None, steps: int, batch_size: int) -> dict:
    """smf (16,384 slots) and full finetuning trained in this process under torch's profiler (CPU and
    CUDA) over the steps after the first two: per step, the time of each phase of the step (the
    trainer's `record_function` ranges) and the operators with the most time of their own."""
    import torch

    from distributed import METHODS, prepare
    from smf.data.sources import training_examples
    from smf.models import load_model
    from smf.cli import build_parser
    from smf.train import train
    from smf.cli.train import train_settings

    plain, memory = folder / "plain", folder / "memory_model"
    if not memory.is_dir():
        plain, memory, _ = prepare("qwen2.5-0.5b", folder, tokenizer_dir)
    cuda = torch.device(device).type == "cuda"
    out = {}
    for label, flags in METHODS.items():
        method = flags[1]
        if method not in ("smf", "full"):
            continue
        # the train part's settings, read by `smf train`'s own parser
        args = build_parser().parse_args(["train", "--model", "-", "--out", "-", "--data", "facts", *flags, "--steps", str(steps),
                                          "--batch-size", str(batch_size), "--max-length", "64"])
        _, config = train_settings(args)
        model, tokenizer = load_model(memory if method == "smf" else plain)
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        prof = torch.profiler.profile(activities=activities)

        def after_step(_model, step: int, prof=prof) -> dict:  # the trainer's evaluation hook, after every step
            if step == 2:
                torch.cuda.synchronize() if cuda else None
                prof.start()
            return {}

        run = folder / f"profiled-{method}"
        train(model, tokenizer, training_examples("facts"), config, run, model_dir=memory if method == "smf" else plain,
              save_model=False, progress=False, eval_fn=after_step, eval_every=1)
        torch.cuda.synchronize() if cuda else None
        prof.stop()
        n = steps - 2
        events = prof.key_averages()
        own = lambda e: getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)  # noqa: E731
        total = lambda e: getattr(e, "device_time_total", 0) or getattr(e, "cuda_time_total", 0)  # noqa: E731
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        out[label] = {
            "step_seconds": [round(r["seconds"], 4) for r in log if "loss" in r],
            "phases_ms_per_step": {e.key: {"cpu": round(e.cpu_time_total / 1e3 / n, 2), "device": round(total(e) / 1e3 / n, 2)}
                                   for e in events if e.key in PHASES},
            "top_cpu_ms_per_step": {e.key: round(e.self_cpu_time_total / 1e3 / n, 2)
                                    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:20]},
            "top_device_ms_per_step": {e.key: round(own(e) / 1e3 / n, 2) for e in sorted(events, key=lambda e: -own(e))[:20]},
        }
        print("profile", label, json.dumps(out[label]), flush=True)
        model = prof = None  # before the next method's model is loaded
        torch.cuda.empty_cache() if cuda else None
    return {"steps": steps, "batch_size": batch_size, "methods": out}


def _median_step(r: dict) -> float | None:
    steps = r.get("step_seconds", [])[2:]
    return statistics.median(steps) if steps else None


def render(result: dict) -> str:
    m = result["machine"]
    lines = [f"`python bench/gpu.py` on {m['cuda'] or 'no GPU'} ({result['gpus']} GPU(s)), torch {m['torch']}; "
             "one run of each part. `smf train` gives tokens/s over the steps after the first two and the CUDA "
             "allocator's peak (`peak_memory_bytes`).", ""]
    if result.get("calls"):
        lines += ["Run on a lent machine (its own torch, transformers, accelerate and peft; `PYTHONPATH=src`, the tokenizer "
                  "folder as the module docstring says): " + "; then ".join(f"`{c}`" for c in result["calls"].values()) + ".", ""]
    s = result.get("sync_free", {})
    step = ", and in an SMF step's selection and lazy Adam update" if s.get("smf_step") else ""  # checked since issue 49
    lines.append(f"- Host syncs in a recorded memory forward, read counts and backward{step} ({s.get('checked_with', '-')}): "
                 + ("none" if s.get("ok") else f"**{s.get('error', 'not run')}**") + ".")
    b = result.get("bf16_evaluation", {})
    if b.get("ok"):
        auto, full = b["auto"], b["no"]
        lines.append(f"- Evaluation with `mixed_precision: auto`{b.get('when', '')}: linear layers in {', '.join(auto['linear_dtypes'])} "
                     f"({auto['seconds']} s, run first; fp32 {full['seconds']} s, run second; random weights, Qwen2.5-0.5B geometry): "
                     f"pydoc word perplexity {auto['pydoc']:.3f} vs fp32 {full['pydoc']:.3f}, facts-control accuracy "
                     f"{auto['facts-control']:.3f} vs {full['facts-control']:.3f}.")
    else:
        lines.append(f"- bf16 evaluation: **{b.get('error', 'not run')}**.")
    t = result.get("train", {})
    if t.get("methods"):
        lines += ["", f"Training at Qwen2.5-0.5B geometry ({t['parameters'] / 1e6:.0f}M parameters before the memory), "
                      f"{t['steps']} steps of {t['batch_size']} facts, max length 64, in the order below (each its own process"
                      + (", after a 4-step smf run not recorded" if t.get("warm_up") else "") + "):", "",
                  "| method | processes | tokens/s | median step | slowest steps (s) | peak memory | optimizer state | all-reduce payload / step |",
                  "|---|---|---|---|---|---|---|---|"]
        for label, runs in t["methods"].items():
            for n, r in runs.items():
                if "error" in r:
                    lines.append(f"| {label} | {n} | failed: {r['error'].splitlines()[-1][:120]} | | | | | |")
                else:
                    median = _median_step(r)
                    slowest = ", ".join(f"{x:.2f}" for x in sorted(r.get("step_seconds", [])[2:], reverse=True)[:3]) or "-"
                    lines.append(f"| {label} | {n} | {r['tokens_per_s']:.0f} | {f'{median:.3f} s' if median else '-'} | {slowest} | "
                                 f"{r['peak_rss_bytes'] / 2**30:.2f} GiB | {r['optimizer_state_bytes'] / 2**20:.1f} MiB | "
                                 f"{r['allreduce_bytes_per_step'] / 2**20:.2f} MiB |")
        one = {label: runs.get("1 process", {}) for label, runs in t["methods"].items()}
        smf = [(label, r) for label, r in one.items() if label.startswith("smf") and "tokens_per_s" in r]
        full = next((r for label, r in one.items() if label.startswith("full") and "tokens_per_s" in r), None)
        if smf and full:
            (label, first), rest = smf[0], smf[1:]
            lines += ["", f"In one process {label} trains at **{first['tokens_per_s'] / full['tokens_per_s']:.2f}×** full "
                          f"finetuning's tokens/s with **{first['peak_rss_bytes'] / full['peak_rss_bytes']:.2f}×** its peak memory"
                      + "".join(f"; {other} at {r['tokens_per_s'] / first['tokens_per_s']:.2f}× the tokens/s of 16,384 slots"
                                for other, r in rest) + " (one run each)."]
            if _median_step(first) and _median_step(full):
                paired = [f / x for f, x in zip(full["step_seconds"][2:], first["step_seconds"][2:])]  # the same batches, step by step
                lines[-1] += (f" Step by step (the same batches in every run), smf's median step takes {_median_step(first):.3f} s "
                              f"against full finetuning's {_median_step(full):.3f} s: full's time over smf's is "
                              f"{statistics.median(paired):.2f}× at the median step; the tokens/s over all steps count a "
                              "few slow steps (the column of slowest steps).")
        if not t.get("ok"):
            lines += ["", f"The training part did not finish: {t.get('error', 'not run').splitlines()[0][:200]}."]
    else:
        lines.append(f"- Training: **{t.get('error', 'not run')}**.")
    p = result.get("profile", {})
    if p.get("methods"):
        lines += ["", f"Profiled in one process, after the runs above (`torch.profiler`, CPU and CUDA; {p['steps']} steps, "
                      "each operator's own time per step over the steps after the first two; the profiler slows every step):", ""]
        for label, r in p["methods"].items():
            cpu = ", ".join(f"`{k[:48]}` {v:.1f}" for k, v in list(r["top_cpu_ms_per_step"].items())[:6])
            dev = ", ".join(f"`{k[:48]}` {v:.1f}" for k, v in list(r["top_device_ms_per_step"].items())[:6])
            lines.append(f"- {label}: steps {', '.join(f'{x:.2f}' for x in r['step_seconds'])} s; most CPU ms per step: {cpu}; "
                         f"most GPU ms per step: {dev}.")
        cudnn = {label: round(sum(v for k, v in r["top_cpu_ms_per_step"].items() if "cudnn_attention" in k), 1)
                 for label, r in p["methods"].items()}
        lines += ["", "A GPU annotation's time (`train/...`) spans the kernels issued under it, so those overlap the operators'. "
                      "CPU time per step in cuDNN's attention (`aten::_cudnn_attention_*`; 0 where it is not among the 20 operators "
                      "with the most): " + ", ".join(f"{label} {ms} ms" for label, ms in cudnn.items()) + "."]
    elif p:
        lines.append(f"- Profile: **{p.get('error', 'not run')}**.")
    if t.get("methods"):
        slow = {}
        for label, runs in t["methods"].items():
            r = runs.get("1 process", {})
            median = _median_step(r)
            slow[label] = [(i + 1, x) for i, x in enumerate(r.get("step_seconds", [])) if i >= 2 and median and x > 5 * median]
        lines += ["", "Steps over 5× their run's median (after the first two): " + "; ".join(
            f"{label}: " + (", ".join(f"step {i} {x:.2f} s" for i, x in steps) or "none") for label, steps in slow.items()) + "."]
    return "\n".join(lines)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--allow-cpu", action="store_true", help="run the parts on the CPU (a check of this script)")
    parser.add_argument("--out", help="write gpu.json here instead of bench/results (and leave BENCHMARKS.md alone)")
    parser.add_argument("--parts", default="sync_free,bf16_evaluation,train,profile")
    parser.add_argument("--profile-steps", type=int, default=8)
    parser.add_argument("--slots", default="16384,1048576",
                        help="memory slots per layer for smf: the first for all three methods' table, the rest smf alone")
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
    from smf.io import write_json_atomic

    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)

    def saved(train_so_far: dict | None = None) -> None:  # after every part, so a run cut short keeps what it measured
        write_json_atomic(out / "gpu.json", {**result, **({"train": train_so_far} if train_so_far else {})})

    if "sync_free" in parts:
        _part(result, "sync_free", lambda: sync_free(device))
        saved()
    if "bf16_evaluation" in parts:
        _part(result, "bf16_evaluation", lambda: bf16_evaluation(device, args.tokenizer))
        saved()
    with tempfile.TemporaryDirectory() as tmp:
        if "train" in parts:
            slots = [int(n) for n in args.slots.split(",")]
            _part(result, "train", lambda: train(args.steps, args.batch_size, gpus, Path(tmp), args.tokenizer, slots, saved))
            saved()
        if "profile" in parts:
            _part(result, "profile", lambda: profile(device, Path(tmp), args.tokenizer, args.profile_steps, args.batch_size))
    saved()
    body = render(result)
    if not args.out:
        update_section("On a GPU", body)
    print(body)


if __name__ == "__main__":
    main()
