"""Evaluation speed per scorer against this CPU's matmul ceiling, before and after a change.

The default study's evaluation, split by scorer: multiple choice (facts, facts-control), generation
(the world and capitals probes, chat template) and perplexity (pydoc, docstrings), on the offline
default model. Each scorer runs in its own process with the evaluator of the working tree ("after")
and with that of a git ref ("before", default the commit before the evaluation speed-ups), in
interleaved rounds, so load from other processes hits both alike. Every process first measures the
matmul ceiling (fp32 GEMM 2048x576 @ 576x1536, the shape of the model's MLP, for 2 s); the fraction
of the ceiling is the scorer's tokens/s over the tokens/s that ceiling allows at 2 FLOPs per
decoder-layer weight per token (the LM head and attention's context are not counted, so perplexity's
fraction understates its work by about a fifth). Tokens are the task's: every prompt and generated
token, every scored text token, as smf evaluate counts them. The records of both sides are compared:
multiple-choice log-likelihoods, generated answers, perplexity log-likelihoods.

    python bench/evaluate.py [--before REF] [--rounds 2]   # bench/results/evaluate.json, BENCHMARKS.md
    python bench/evaluate.py --render                      # the BENCHMARKS.md section again from the record

"before" is read from git (`git archive REF src`): it needs the repository's history.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import RESULTS, ROOT, machine, median, update_section  # noqa: E402

BEFORE = "560ab02"  # the evaluator before prefix sharing, unmasked perplexity and shared curve points
SCORERS = {"multiple choice": ("facts", "facts-control"), "generation": ("world", "capitals"),
           "perplexity": ("pydoc", "docstrings")}
CEILING_SHAPE = (2048, 576, 1536)


def matmul_ceiling(seconds: float = 2.0) -> float:
    """fp32 GEMM FLOP/s on this machine now."""
    import torch

    m, k, n = CEILING_SHAPE
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * m * k * n * runs / (time.perf_counter() - start)


def worker(src: str, scorer: str) -> dict:
    """Score one scorer's tasks with the evaluator in `src`; tokens, seconds, ceiling and records."""
    sys.path.insert(0, src)
    import torch

    from smf.evaluate import load_task, run_task
    from smf.models import load_model
    from smf.study.config import StudyConfig

    config = StudyConfig.load(ROOT / "configs" / "offline.yaml")
    tasks = {t.label: t for t in (load_task(s) for s in config.eval_specs())}
    model, tokenizer = load_model()
    model.eval()
    layer_weights = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and p.dim() == 2)
    ceiling = matmul_ceiling()
    out = {"ceiling_flops": ceiling, "flops_per_token": 2 * layer_weights, "tasks": {}}
    with torch.inference_mode():
        for label in SCORERS[scorer]:
            r = run_task(model, tokenizer, tasks[label], batch_size=config.evaluation.batch_size,
                         generate_batch_size=config.evaluation.generate_batch_size, progress=False)
            out["tasks"][label] = {"seconds": r["seconds"], "tokens": r["tokens"], "headline": r["headline"]["value"],
                                   "records": r["records"]}
    return out


def compare(before: dict, after: dict) -> dict:
    """How the records of the two sides differ, task by task (log-likelihoods as recorded, to 4 decimals)."""
    out = {}
    for label, b in before["tasks"].items():
        b, a = b["records"], after["tasks"][label]["records"]
        if "logprobs" in b[0]:
            out[label] = {"largest Δ loglik": max(abs(x - y) for rb, ra in zip(b, a) for x, y in zip(rb["logprobs"], ra["logprobs"]))}
        elif "output" in b[0]:
            out[label] = {"same answers": f"{sum(rb['output'] == ra['output'] for rb, ra in zip(b, a))}/{len(b)}"}
        else:
            out[label] = {"largest Δ loglik": max(abs(rb["loglikelihood"] - ra["loglikelihood"]) for rb, ra in zip(b, a))}
    return out


def run_side(src: Path, scorer: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", str(src), scorer], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{scorer} with {src} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    tokens = sum(t["tokens"] for t in runs[0]["tasks"].values())
    rates = [tokens / sum(t["seconds"] for t in r["tasks"].values()) for r in runs]
    fractions = [rate * r["flops_per_token"] / r["ceiling_flops"] for rate, r in zip(rates, runs)]
    return {"tokens": tokens, "seconds": [round(sum(t["seconds"] for t in r["tasks"].values()), 2) for r in runs],
            "tokens_per_s": round(median(rates), 1), "ceiling_fraction": round(median(fractions), 3),
            "ceiling_gflops": round(median([r["ceiling_flops"] for r in runs]) / 1e9, 1)}


def markdown(result: dict) -> str:
    lines = [
        f"`python bench/evaluate.py` on {result['model']} (fp32, {result['machine']['cores']} CPU cores, "
        f"{result['machine']['torch_threads']} threads, torch {result['machine']['torch']}), {result['date']}: the default "
        f"study's evaluation split by scorer, each in its own process, before (the evaluator of `{result['before']}`) and "
        f"after, {result['rounds']} interleaved rounds, medians. Ceiling: this CPU's fp32 matmul, measured in each process "
        f"(median {result['ceiling_gflops']} GFLOP/s); the fraction counts 2 FLOPs per decoder-layer weight per token "
        "(not the LM head, not attention's context).",
        "",
        "| scorer | tasks | tokens | before tok/s | after tok/s | gain | before, of ceiling | after, of ceiling | records |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for scorer, r in result["scorers"].items():
        b, a = r["before"], r["after"]
        same = "; ".join(f"{label}: " + ", ".join(f"{k} {v:.2g}" if isinstance(v, float) else f"{k} {v}" for k, v in c.items())
                         for label, c in r["records"].items())
        lines.append(f"| {scorer} | {', '.join(SCORERS[scorer])} | {a['tokens']} | {b['tokens_per_s']:.0f} | {a['tokens_per_s']:.0f} | "
                     f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}× | {b['ceiling_fraction']:.0%} | {a['ceiling_fraction']:.0%} | {same} |")
    lines += [
        "",
        "What changed: generation runs the prompts' shared prefix (the chat template's system turn) once per batch and "
        "shares its KV cache; perplexity's right-padded windows run without an attention mask (causal attention already "
        "hides the padding after a row's tokens), so the attention kernel skips the masked half. Training curves take "
        "their last point from the final evaluation, and the base curve from the base evaluation (not measured here).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="git ref of the evaluator to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", nargs=2, metavar=("SRC", "SCORER"), help=argparse.SUPPRESS)
    parser.add_argument("--render", action="store_true", help="rewrite the BENCHMARKS.md section from bench/results/evaluate.json")
    args = parser.parse_args()
    if args.render:
        update_section("Evaluation", markdown(json.loads((RESULTS / "evaluate.json").read_text())))
        return
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", args.before, "src"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        sides = {"before": Path(tmp) / "src", "after": ROOT / "src"}
        runs: dict = {s: {side: [] for side in sides} for s in SCORERS}
        for k in range(args.rounds):
            for scorer in SCORERS:
                for side in (("before", "after") if k % 2 == 0 else ("after", "before")):
                    runs[scorer][side].append(run_side(sides[side], scorer))
                    print(f"round {k + 1} {scorer:16s} {side:6s} {sum(t['seconds'] for t in runs[scorer][side][-1]['tasks'].values()):7.1f} s",
                          flush=True)
    result = {"model": "SmolLM2-135M-Instruct (offline default)", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "before": args.before, "rounds": args.rounds, "scorers": {}}
    for scorer, sides in runs.items():
        result["scorers"][scorer] = {side: summarise(r) for side, r in sides.items()}
        result["scorers"][scorer]["records"] = compare(sides["before"][0], sides["after"][0])
    result["ceiling_gflops"] = round(median([r["ceiling_flops"] for sides in runs.values() for rs in sides.values() for r in rs]) / 1e9, 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "evaluate.json").write_text(json.dumps(result, indent=2) + "\n")
    update_section("Evaluation", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
