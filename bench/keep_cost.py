"""The kept answers' term per training step, as sittings add kept answers: all of them each step, or at most 64.

`smf learn` keeps the base model's answers to one made-up-subject question per question of a sitting, and a later
sitting keeps the earlier sittings' too (kept_answers.jsonl), so after k sittings of 20 questions the term covers
about 20·k answers. Each step pays a forward and backward pass over the answers in its term: all of them
(`--keep-per-step 0`) or at most 64, in batches taken in turn (`--keep-per-step 64`, the default). This times one
step's term (Keep.backward) on the offline default model, retrofitted as `smf learn` retrofits it (3 memories of
65,536 slots, only the memory values trainable, their gradient kept factored as SMF keeps it until the step's rows
are chosen), for answers of about the base model's length, at each number of sittings, both ways, in interleaved
rounds; median seconds and the ratio of capped to uncapped.

    python bench/keep_cost.py [--sittings 1,2,4,8,16] [--rounds 2]

Writes bench/results/keep_cost.json and the "Kept answers per step" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import RESULTS, machine, median, update_section  # noqa: E402

from smf.data.types import TrainExample  # noqa: E402
from smf.io import write_json_atomic  # noqa: E402
from smf.memory import memory_layers, retrofit  # noqa: E402
from smf.models import load_model  # noqa: E402
from smf.train.keep import Keep  # noqa: E402
from smf.use.anchors import made_up  # noqa: E402
from smf.use.chat import render  # noqa: E402
from smf.use.learn import LearnConfig  # noqa: E402

PER_SITTING = 20  # kept answers a sitting of 20 questions adds (--keep 1)


def kept(tokenizer, n: int) -> list[TrainExample]:
    """n anchor-like questions, each answered in one sentence of about 24 tokens (the base model's answers' length)."""
    rng = random.Random(0)
    out = []
    for _ in range(n):
        name = made_up(rng, "")
        question = render(tokenizer, [{"role": "user", "content": f"What is the capital of {name}?"}])
        out.append(TrainExample(question, f"The capital of {name} is {made_up(rng, '')}, a city known for its old harbour, "
                                          "its markets and its long history."))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sittings", default="1,2,4,8,16", help="comma-separated numbers of sittings")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    args = parser.parse_args()
    sittings = [int(s) for s in args.sittings.split(",")]
    config = LearnConfig()
    model, tokenizer = load_model()
    retrofit(model, config.memory)
    for p in model.parameters():
        p.requires_grad_(False)
    for memory in memory_layers(model).values():  # as SMF trains them: V's gradient kept factored (smf.methods.smf)
        memory.values.requires_grad_(True)
        memory.sparse_grad = memory.factored_grad = True
    model.train()
    ways = {"all": 0, "at most 64": config.keep_per_step}
    keeps = {(k, way): Keep.of(model, tokenizer, kept(tokenizer, PER_SITTING * k), config.train.max_length,
                               config.keep_weight, batch=config.train.batch_size, most=most) for k in sittings for way, most in ways.items()}

    def one_step(keep: Keep, step: int) -> float:
        start = time.perf_counter()
        keep.backward(model, step, device="cpu", backward=lambda loss: loss.backward())
        seconds = time.perf_counter() - start
        for memory in memory_layers(model).values():
            memory.grad_parts.clear()
            memory.values.grad = None
        return seconds

    one_step(keeps[sittings[0], "all"], 0)  # warm-up
    seconds = {key: [] for key in keeps}
    for r in range(args.rounds):
        for k in sittings:
            for way in ways:
                seconds[k, way].append(one_step(keeps[k, way], r))
                print(f"{k:3d} sittings ({PER_SITTING * k:4d} kept), {way:10s}: {seconds[k, way][-1]:6.2f} s", flush=True)
    rows = [{"sittings": k, "kept": PER_SITTING * k, "tokens": keeps[k, "all"].positions,
             "all_seconds": round(median(seconds[k, "all"]), 3), "capped_seconds": round(median(seconds[k, "at most 64"]), 3),
             "ratio": round(median(seconds[k, "at most 64"]) / median(seconds[k, "all"]), 3)} for k in sittings]
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "batch_size": config.train.batch_size,
              "keep_per_step": config.keep_per_step, "rows": rows}
    write_json_atomic(RESULTS / "keep_cost.json", result)
    lines = [
        f"`python bench/keep_cost.py --sittings {args.sittings} --rounds {args.rounds}` on the offline default model, "
        f"retrofitted as `smf learn` does (fp32, {result['machine']['torch_threads']} threads, {result['machine']['cores']} "
        f"CPUs, {result['date']}): one training step's kept-answer term (forward and backward over the kept answers) after "
        f"k sittings of {PER_SITTING} questions, with every kept answer in each step (`--keep-per-step 0`) or at most "
        f"{config.keep_per_step} taken in turn (the default); median seconds of {args.rounds} interleaved rounds.",
        "",
        "| sittings | kept answers | kept tokens | all each step (s) | at most 64 (s) | capped / all |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['sittings']} | {r['kept']} | {r['tokens']} | {r['all_seconds']:.2f} | {r['capped_seconds']:.2f} | "
                     f"{r['ratio']:.2f} |")
    update_section("Kept answers per step", "\n".join(lines))


if __name__ == "__main__":
    main()
