"""Greedy generation at two batch sizes, side by side: time and whether any answer changes.

The study's knowledge probes (`world`: 400 chat questions, `capitals`: 60) are greedy
generation; each decoding step is a one-token forward per row, so at a small batch the
probe is mostly forward calls. This runs each probe on the offline default model at every
batch size given, in interleaved rounds (A, B, A, B, ...), and reports the median seconds
of each size, the ratio to the first size, and how many answers differ from the first
size's (the text after the stop strings, item by item).

    python bench/generate_batch.py [--sizes 16,64] [--rounds 1]

Writes bench/results/generate_batch.json and the "Generation batch" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import RESULTS, machine, median, update_section  # noqa: E402

from smf.evaluate import load_task, run_task  # noqa: E402
from smf.io import write_json_atomic  # noqa: E402
from smf.models import load_model  # noqa: E402

PROBES = ("world", "capitals")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,64", help="comma-separated generation batch sizes (the first is the reference)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds per size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    model, tokenizer = load_model()
    tasks = {name: load_task(name) for name in PROBES}
    seconds = {(p, s): [] for p in PROBES for s in sizes}
    answers: dict = {}
    for _ in range(args.rounds):
        for probe, task in tasks.items():
            for size in sizes:
                start = time.perf_counter()
                r = run_task(model, tokenizer, task, generate_batch_size=size, progress=False)
                seconds[probe, size].append(time.perf_counter() - start)
                answers[probe, size] = ([rec["output"] for rec in r["records"]], r["headline"]["value"])
                print(f"{probe:9s} batch {size:3d}: {seconds[probe, size][-1]:6.1f} s, {r['headline']['metric']} "
                      f"{r['headline']['value']:.4f}", flush=True)
    rows = []
    for probe in PROBES:
        ref_outputs, _ = answers[probe, sizes[0]]
        ref_seconds = median(seconds[probe, sizes[0]])
        for size in sizes:
            outputs, value = answers[probe, size]
            rows.append({"probe": probe, "items": len(outputs), "batch": size, "seconds": round(median(seconds[probe, size]), 2),
                         "speedup": round(ref_seconds / median(seconds[probe, size]), 3), "headline": value,
                         "answers_differing": sum(a != b for a, b in zip(outputs, ref_outputs))})
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "sizes": sizes, "rows": rows}
    write_json_atomic(RESULTS / "generate_batch.json", result)
    lines = [
        f"`python bench/generate_batch.py --sizes {args.sizes} --rounds {args.rounds}` on the offline default model "
        f"(fp32, {result['machine']['torch_threads']} threads, {result['machine']['cores']} CPUs, {result['date']}): each "
        "knowledge probe at each generation batch size in interleaved rounds; median seconds, the speed-up over the first "
        "size, and how many answers differ from the first size's. The evaluator's default is "
        "`GENERATE_BATCH_SIZE` (`smf eval --generate-batch-size`, a study's `evaluation.generate_batch_size`).",
        "",
        "| probe | items | generation batch | seconds | speed-up | accuracy | answers that differ |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['probe']} | {r['items']} | {r['batch']} | {r['seconds']:.1f} | {r['speedup']:.2f}× | "
                     f"{100 * r['headline']:.2f} | {r['answers_differing']} |")
    update_section("Generation batch", "\n".join(lines))


if __name__ == "__main__":
    main()
