"""Does healing work? The offline default with its FFN replaced by memory at 3 layers,
before and after a short heal, against the base model.

Prose perplexity on held-out pydoc text (the heal trains on pydoc's background part, which
never overlaps it) and on WikiText-style line rows of tests/fixtures/parity (another
source). Prints a Markdown table; writes JSON to the path given (default
runs/heal_check.json).

    .venv/bin/python studies/heal/heal_check.py [OUT.json] [--steps N] [--batch-size B] [--max-length L]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from smf.evaluate import evaluate
from smf.io import write_json_atomic
from smf.memory import MemoryConfig, retrofit, save_retrofitted
from smf.methods.heal import HealConfig
from smf.models import load_model
from smf.train.stages import heal

ROOT = Path(__file__).resolve().parents[2]
PROBES = [
    {"name": "pydoc", "limit": 8, "as": "pydoc (held out)"},
    {"name": "wikitext-103-published", "source": str(ROOT / "tests/fixtures/parity/wikitext_parity.jsonl"), "max_length": 64, "stride": 32,
     "as": "wikitext lines"},
]


def measure(model, tokenizer) -> dict:
    out = evaluate(model, tokenizer, PROBES, progress=False, records=False)["tasks"]
    return {label: r["headline"]["value"] for label, r in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="runs/heal_check.json")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--work", default="runs/heal_check")
    args = parser.parse_args()
    work = Path(args.work)
    model, tokenizer = load_model()
    rows = {"base": measure(model, tokenizer)}
    memory = MemoryConfig(layers=(8, 14, 20), slots=16384, heads=4, topk=16, key_dim=256, mode="replacement")
    retrofit(model, memory)
    rows["replaced, not healed"] = measure(model, tokenizer)
    folder = save_retrofitted(model, tokenizer, work / "replaced", overwrite=True)
    start = time.perf_counter()
    config = HealConfig(data="pydoc", steps=args.steps, batch_size=args.batch_size, max_length=args.max_length)
    result = heal(folder, config, work / "healed", resume=False)
    seconds = time.perf_counter() - start
    rows[f"healed ({args.steps} steps)"] = measure(result.model, tokenizer)
    base, broken, healed = rows.values()
    closed = {k: (broken[k] - healed[k]) / (broken[k] - base[k]) for k in base}
    print("| model | " + " | ".join(base) + " |\n|---|" + "---|" * len(base))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in r.values()) + " |")
    print("| gap closed by healing | " + " | ".join(f"{100 * v:.0f}%" for v in closed.values()) + " |")
    print(f"heal: {args.steps} steps of {args.batch_size} x {args.max_length} tokens, {seconds:.0f} s; loss {result.summary['first_loss']:.3f} → {result.summary['final_loss']:.3f}")
    write_json_atomic(args.out, {"memory": memory.to_dict(), "heal": config.to_dict(), "perplexity": rows, "gap_closed": closed,
                                 "heal_seconds": seconds, "loss": [result.summary["first_loss"], result.summary["final_loss"]]})


if __name__ == "__main__":
    main()
