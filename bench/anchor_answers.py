"""A sitting's anchor answers, one at a time against in batches, side by side: time and whether any answer changes.

Before it trains, `smf learn` asks the model questions about made-up subjects (anchors, and kept answers with
--keep) and takes its greedy first sentence as each answer. This asks the anchors of the validation facts and the
fixture's facts (one per question with a subject) of the offline default model, retrofitted as `smf learn`
retrofits it, its memory reading zeros: with `smf.use.chat.answer` one question at a time and with
`smf.use.chat.answers` (`smf.models.greedy_batches`, left-padded), in interleaved rounds; median seconds, the
speed-up, and how many answers differ.

    python bench/anchor_answers.py [--rounds 1]

Writes bench/results/anchor_answers.json and the "Anchor answers" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import RESULTS, machine, median, update_section  # noqa: E402

from smf.data.anchors import anchor_questions, first_sentence  # noqa: E402
from smf.io import write_json_atomic  # noqa: E402
from smf.memory.retrofit import memory_reading_zeros, retrofit  # noqa: E402
from smf.models import load_model  # noqa: E402
from smf.use.chat import answer, answers  # noqa: E402
from smf.use.learn.config import LearnConfig  # noqa: E402
from smf.use.learn.facts import read_facts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FACTS = (ROOT / "studies/learn-check/validation/first.jsonl", ROOT / "tests/fixtures/user_facts/first.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    model, tokenizer = load_model()
    retrofit(model, LearnConfig().memory.at_depth(model.config.num_hidden_layers))
    model.eval()
    facts = [f for path in FACTS for f in read_facts(path)]
    turns = [[{"role": "user", "content": q}] for q in anchor_questions([f.question for f in facts if f.question], 1, seed=1)]
    ways = {"one at a time": lambda: [first_sentence(answer(model, tokenizer, t, max_new_tokens=32)) for t in turns],
            "batches of 32": lambda: [first_sentence(a) for a in answers(model, tokenizer, turns, max_new_tokens=32)]}
    seconds, said = {w: [] for w in ways}, {}
    with memory_reading_zeros(model):
        for _ in range(args.rounds):
            for way, run in ways.items():
                start = time.perf_counter()
                said[way] = run()
                seconds[way].append(time.perf_counter() - start)
                print(f"{way}: {seconds[way][-1]:.1f} s", flush=True)
    one = median(seconds["one at a time"])
    rows = [{"way": w, "seconds": round(median(s), 2), "speedup": round(one / median(s), 2),
             "answers_differing": sum(a != b for a, b in zip(said[w], said["one at a time"]))} for w, s in seconds.items()]
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "questions": len(turns), "rows": rows}
    write_json_atomic(RESULTS / "anchor_answers.json", result)
    lines = [f"`python bench/anchor_answers.py --rounds {args.rounds}` on the offline default model, retrofitted (fp32, "
             f"{result['machine']['torch_threads']} threads, {result['machine']['cores']} CPUs, {result['date']}): the "
             f"{len(turns)} anchor questions of the validation and fixture facts, answered greedily (32 new tokens at most, "
             "the first sentence kept) one at a time and in batches, in interleaved rounds; median seconds, the speed-up, "
             "and how many answers differ from one at a time's. `smf learn` answers its anchors and kept answers in "
             "batches.", "", "| way | seconds | speed-up | answers that differ |", "|---|---:|---:|---:|"]
    lines += [f"| {r['way']} | {r['seconds']:.1f} | {r['speedup']:.2f}× | {r['answers_differing']} |" for r in rows]
    update_section("Anchor answers", "\n".join(lines))


if __name__ == "__main__":
    main()
