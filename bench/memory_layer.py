"""Benchmark the memory layer: model forward with vs without memory, and lookup vs N.

1. Forward tokens/s of the offline default model retrofitted with 3 memory layers of
   65,536 slots, against the base model, measured side by side (interleaved) in one run.
2. Time of one memory layer's lookup (and of the whole layer) for N = 16K … 1M slots at
   fixed top-k: product keys should make it grow about like sqrt(N), not N.

Writes bench/results/memory_layer.json and the "Memory layer" section of BENCHMARKS.md.
Run: .venv/bin/python bench/memory_layer.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from common import RESULTS, machine, median, timed, update_section
from smf.memory import MemoryConfig, ProductKeyMemory, retrofit
from smf.models import load_model


def forward_throughput(batch: int, seq: int, rounds: int) -> dict:
    base, tokenizer = load_model()
    memcfg = MemoryConfig(layers=(8, 14, 20), slots=65536, heads=4, topk=16, key_dim=256)
    mem = retrofit(copy.deepcopy(base), memcfg).eval()
    ids = torch.randint(100, len(tokenizer), (batch, seq), generator=torch.Generator().manual_seed(0))
    times = {"base": [], "memory": []}

    def run(model):
        with torch.no_grad():
            model(ids)

    run(base), run(mem)
    for _ in range(rounds):  # interleave, so drift in machine load hits both alike
        times["base"] += timed(lambda: run(base), repeat=1, warmup=0)
        times["memory"] += timed(lambda: run(mem), repeat=1, warmup=0)
    tokens = batch * seq
    out = {k: {"median_s": median(v), "tokens_per_s": tokens / median(v)} for k, v in times.items()}
    out["time_ratio_memory_over_base"] = out["memory"]["median_s"] / out["base"]["median_s"]
    out["setup"] = {"batch": batch, "seq": seq, "rounds": rounds, "memory": memcfg.to_dict()}
    return out


def lookup_scaling(tokens: int, repeat: int, slot_counts: list[int]) -> list[dict]:
    hidden = 576
    x = torch.randn(tokens, hidden, generator=torch.Generator().manual_seed(0))
    rows = []
    for n in slot_counts:
        cfg = MemoryConfig(layers=(0,), slots=n, heads=4, topk=16, key_dim=256, value_init="normal")
        mem = ProductKeyMemory(hidden, cfg)
        mem.reset_parameters(torch.Generator().manual_seed(0))
        mem.eval()
        xn = mem.normalize(x)
        with torch.no_grad():
            lookup = median(timed(lambda: mem.lookup(xn), repeat=repeat, warmup=2))
            layer = median(timed(lambda: mem(x.view(1, tokens, hidden)), repeat=repeat, warmup=2))
        rows.append({"slots": n, "sqrt_slots": cfg.sub_keys, "lookup_ms": 1e3 * lookup, "layer_ms": 1e3 * layer})
        print(f"N={n:>8,}: lookup {1e3 * lookup:7.1f} ms, layer {1e3 * layer:7.1f} ms ({tokens} tokens)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = parser.parse_args()
    rounds, repeat = (2, 3) if args.quick else (6, 7)
    forward = forward_throughput(batch=8, seq=256, rounds=rounds)
    print(json.dumps(forward, indent=1))
    scaling = lookup_scaling(tokens=2048, repeat=repeat, slot_counts=[16384, 65536, 262144, 1048576])
    result = {"machine": machine(), "forward": forward, "lookup_scaling": scaling}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory_layer.json").write_text(json.dumps(result, indent=2) + "\n")

    first = scaling[0]
    table = "\n".join(
        f"| {r['slots']:,} | {r['sqrt_slots']} | {r['lookup_ms']:.1f} | {r['lookup_ms'] / first['lookup_ms']:.2f}× | "
        f"{(r['sqrt_slots'] / first['sqrt_slots']):.0f}× | {r['slots'] // first['slots']}× | {r['layer_ms']:.1f} |"
        for r in scaling
    )
    m = result["machine"]
    body = f"""
`python bench/memory_layer.py` on {m['cores']} CPU cores ({m['cpu']}), torch {m['torch']}, {m['torch_threads']} threads, fp32.

**Forward pass, offline default model (SmolLM2-135M-Instruct), batch 8 × 256 tokens**, base vs
retrofitted with 3 memory layers (8, 14, 20) × 65,536 slots, 4 heads, top-k 16, key dim 256;
interleaved, median of {rounds} rounds each:

| model | tokens/s | time per batch |
|---|---|---|
| base | {forward['base']['tokens_per_s']:.0f} | {forward['base']['median_s']:.2f} s |
| + memory (3 × 65,536 slots) | {forward['memory']['tokens_per_s']:.0f} | {forward['memory']['median_s']:.2f} s |

Time ratio memory / base: **{forward['time_ratio_memory_over_base']:.3f}×** (aim ≤ 1.15×).

**One memory layer vs slot count N** (2,048 tokens, hidden 576, 4 heads, top-k 16, key dim 256; median of {repeat}):

| slots N | sqrt(N) | lookup ms | lookup growth | sqrt(N) growth | N growth | whole layer ms |
|---|---|---|---|---|---|---|
{table}

The lookup includes the query projection (independent of N) and the sub-key scores (∝ sqrt(N));
its growth should follow sqrt(N), far below N. The whole layer adds the gated read and output.
"""
    update_section("Memory layer", body)
    print(body)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
