"""Benchmark training in one and in two processes (torch.distributed, gloo on this CPU).

For smf (tfidf, lazy Adam), lora and full finetuning on the same data, each method runs
`smf train` once in one process and once in two (torchrun), and the run's own log gives:
tokens/s over the global batch (steps after the first two), the all-reduce payload per step
(what one process contributes; smf.distributed), peak RSS of the main process and the
optimizer state. Two geometries:

- `default`: SmolLM2-135M-Instruct (the offline default, real weights), smf with the
  published study's memory (3 × 16,384 slots at layers 8, 14, 20; t = 512);
- `qwen2.5-0.5b`: Qwen2.5-0.5B-Instruct's exact geometry with random weights (hidden 896,
  24 layers, 14 heads, 2 KV heads, FFN 4864, vocabulary 151,936, tied embeddings; the real
  weights are out of reach here), memory at layers 6, 12, 18 as in the published study.

Writes bench/results/distributed.json and the "Several processes" section of BENCHMARKS.md.
Run: .venv/bin/python bench/distributed.py [--geometry default,qwen2.5-0.5b] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from common import RESULTS, ROOT, machine, update_section

METHODS = {
    "smf (tfidf, t=512, lazy Adam)": ["--method", "smf", "--rule", "tfidf", "--top-t", "512", "--lr", "1.0"],
    "lora (r=16, all linear)": ["--method", "lora", "--lr", "1e-3"],
    "full (AdamW)": ["--method", "full", "--lr", "1e-5"],
}
GEOMETRY = {
    "default": {"layers": (8, 14, 20)},
    "qwen2.5-0.5b": {"layers": (6, 12, 18), "config": dict(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1000000.0,
        rms_norm_eps=1e-6)},
}


def geometry_model(geometry: str, tokenizer_dir: str | None = None):
    """(model, tokenizer): the default model, or a geometry's from its config with seeded random weights
    and the default model's tokenizer (or the one in `tokenizer_dir`)."""
    import torch

    from smf.models import load_model, load_tokenizer

    spec = GEOMETRY[geometry]
    if "config" not in spec:
        return load_model()
    from transformers import AutoModelForCausalLM, Qwen2Config

    tokenizer = load_tokenizer(tokenizer_dir)  # a smaller vocabulary than the geometry's: its ids are valid there
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen2Config(**spec["config"], pad_token_id=tokenizer.pad_token_id,
                                                             eos_token_id=tokenizer.eos_token_id), dtype=torch.float32)
    return model, tokenizer


def prepare(geometry: str, folder: Path, tokenizer_dir: str | None = None, slots: int = 16384) -> tuple[Path, Path, int]:
    """(plain model folder, retrofitted folder with `slots` slots per memory layer and background
    statistics, parameter count)."""
    from smf.data.sources import general_texts
    from smf.memory import MemoryConfig, retrofit, save_retrofitted
    from smf.models import load_model, resolve_model
    from smf.train.stages import collect_background
    from smf.data.batching import collate, text_chunks

    spec = GEOMETRY[geometry]
    if "config" in spec:
        model, tokenizer = geometry_model(geometry, tokenizer_dir)
        plain = folder / "plain"
        model.save_pretrained(plain)
        tokenizer.save_pretrained(plain)
    else:
        plain = resolve_model(None)
        model, tokenizer = load_model(plain)
    parameters = sum(p.numel() for p in model.parameters())
    retrofit(model, MemoryConfig(layers=spec["layers"], slots=slots, heads=4, topk=16, key_dim=256))
    path = save_retrofitted(model, tokenizer, folder / "memory_model")
    chunks = text_chunks(general_texts("pydoc"), tokenizer, 128)[:32]
    stats = collect_background(model, [collate(chunks[i : i + 8], tokenizer.pad_token_id) for i in range(0, 32, 8)], progress=False)
    stats.save(path)
    return plain, path, parameters


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str], processes: int, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    if processes == 1:
        command = [sys.executable, "-m", "smf", *args]
    else:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // processes))
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
                   "--master_port", str(free_port()), "-m", "smf", *args]
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steady = [r for r in log if "loss" in r][2:]
    s = json.loads((out / "summary.json").read_text())
    return {"tokens_per_s": sum(r["tokens"] for r in steady) / sum(r["seconds"] for r in steady),
            "allreduce_bytes_per_step": s["allreduce_bytes_per_step"], "peak_rss_bytes": s["peak_memory_bytes"],
            "optimizer_state_bytes": s["optimizer_state_bytes"], "final_loss": s["final_loss"],
            "step_seconds": [round(r["seconds"], 4) for r in log if "loss" in r]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--geometry", default="default,qwen2.5-0.5b")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--render", action="store_true", help="rewrite BENCHMARKS.md from bench/results/distributed.json only")
    parser.add_argument("--prepare", help=argparse.SUPPRESS)  # internal: build the models in a child process, print JSON
    args = parser.parse_args()
    if args.prepare:
        geometry, folder = args.prepare.split(":", 1)
        plain, memory, parameters = prepare(geometry, Path(folder))
        print("RESULT " + json.dumps([str(plain), str(memory), parameters]))
        return
    if args.render:
        update_section("Several processes", render(json.loads((RESULTS / "distributed.json").read_text())))
        return
    results = {"machine": machine(), "steps": args.steps, "batch_size": args.batch_size, "geometries": {}}
    earlier = RESULTS / "distributed.json"
    if earlier.is_file():  # keep the geometries this run does not measure
        kept = json.loads(earlier.read_text())
        if (kept["steps"], kept["batch_size"]) == (args.steps, args.batch_size):
            results["geometries"] = kept["geometries"]
    for geometry in args.geometry.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            # in a child process, so this one holds no model while the runs measure memory
            done = subprocess.run([sys.executable, __file__, "--prepare", f"{geometry}:{tmp}"], capture_output=True, text=True, check=True)
            plain, memory, parameters = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))[7:])
            rows = {}
            for label, flags in METHODS.items():
                model = memory if flags[1] == "smf" else plain
                common = ["train", "--model", str(model), "--data", "facts", *flags, "--steps", str(args.steps),
                          "--batch-size", str(args.batch_size), "--max-length", "64", "--checkpoint-every", "0"]
                rows[label] = {f"{n} process{'es' if n > 1 else ''}": run(common, n, Path(tmp) / f"{label[:4]}-{n}") for n in (1, 2)}
                print(geometry, label, json.dumps(rows[label]))
            results["geometries"][geometry] = {"parameters": parameters, "methods": rows, "factored_value_gradient": True}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distributed.json").write_text(json.dumps(results, indent=2) + "\n")
    update_section("Several processes", render(results))


def render(results: dict) -> str:
    lines = [
        "`smf train` in one process and in two (`torchrun --nproc_per_node 2 -m smf train ...`, gloo) on this "
        f"{results['machine']['cores']}-core CPU: {results['steps']} steps of {results['batch_size']} facts, max length 64, one run each "
        "(tokens/s over the global batch, steps after the first two). The all-reduce payload is what each process "
        "contributes per step (smf: one int32 count per slot and the selected rows' gradients per memory layer; "
        "the others: every trainable gradient). `python bench/distributed.py` rewrites this section.",
        "",
    ]
    for geometry, g in results["geometries"].items():
        lines += [f"**{geometry}** ({g['parameters'] / 1e6:.0f}M parameters before the memory):", "",
                  "| method | tokens/s, 1 process | tokens/s, 2 processes | all-reduce payload / step | vs full | peak RSS, 1 process | peak RSS per process, 2 | optimizer state |",
                  "|---|---|---|---|---|---|---|---|"]
        if not g.get("factored_value_gradient"):
            lines[-2:-2] = ["These runs were measured before SMF kept its value gradient factored until the step's rows are "
                            "chosen (they used embedding_bag's sparse gradient, a value row per read); \"Memory vs slot count\" "
                            "below measures the change side by side. The payloads do not depend on it.", ""]
        methods = g["methods"]
        full = methods["full (AdamW)"]["2 processes"]["allreduce_bytes_per_step"]
        for label, r in methods.items():
            one, two = r["1 process"], r["2 processes"]
            lines.append(f"| {label} | {one['tokens_per_s']:.0f} | {two['tokens_per_s']:.0f} | {two['allreduce_bytes_per_step'] / 2**20:.2f} MiB | "
                         f"{100 * two['allreduce_bytes_per_step'] / full:.2f} % | {one['peak_rss_bytes'] / 2**30:.2f} GiB | "
                         f"{two['peak_rss_bytes'] / 2**30:.2f} GiB | {two['optimizer_state_bytes'] / 2**20:.1f} MiB |")
        smf, dense = methods["smf (tfidf, t=512, lazy Adam)"]["1 process"], methods["full (AdamW)"]["1 process"]
        lines += ["", f"In one process smf trains at {smf['tokens_per_s'] / dense['tokens_per_s']:.1f}× full finetuning's tokens/s "
                      f"with {smf['peak_rss_bytes'] / dense['peak_rss_bytes']:.2f}× its peak RSS (one run each).", ""]
    lines += [
        "On paper, the payloads follow from the code's rule: smf sends, per memory layer, 4 bytes per slot and 4 · t · d "
        "bytes of row gradients; full finetuning 4 bytes per weight. For a 7B Llama-style model (d = 4096) with 3 memory "
        f"layers of 16,384 slots and t = 512: 3 · (16,384 · 4 + 512 · 4096 · 4) = {3 * (16384 * 4 + 512 * 4096 * 4) / 2**20:.1f} MiB "
        f"a step, against {7e9 * 4 / 2**30:.0f} GiB for full finetuning ({100 * 3 * (16384 * 4 + 512 * 4096 * 4) / (7e9 * 4):.2f} %); "
        "the smf payload grows with t · d and the slot count, not with the model.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
