"""Does healing work? The offline default with its FFN replaced by memory at 3 layers,
before and after a short heal, against the base model.

Prose perplexity on held-out pydoc text (the heal trains on pydoc's background part, which
never overlaps it) and on WikiText-style line rows of tests/fixtures/parity (another
source). Writes JSON to the path given (default runs/heal_check.json) and prints the
Markdown table that `markdown(record, level)` renders from it: the page's block
`results:heal_check`, rendered from studies/heal/results/heal_check.json by
scripts/publish_results.py (this module imports smf's model code only inside main(), so
rendering is cheap).

    .venv/bin/python studies/heal/heal_check.py [OUT.json] [--steps N] [--batch-size B] [--max-length L]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBES = [
    {"name": "pydoc", "limit": 8, "as": "pydoc (held out)"},
    {"name": "wikitext-103-published", "source": str(ROOT / "tests/fixtures/parity/wikitext_parity.jsonl"), "max_length": 64, "stride": 32,
     "as": "wikitext lines"},
]


# How the page names the record's rows and columns.
LABELS = {"replaced, not healed": "FFN replaced, not healed", "wikitext lines": "WikiText lines"}


def markdown(record: dict, level: int = 2) -> str:
    """The page's table from a record of main(): perplexity of base, replaced and healed model,
    and the share of the replacement's perplexity gap the heal closed, per probe. (The table
    carries no heading, so `level` changes nothing.)"""
    rows = record["perplexity"]
    probes = list(next(iter(rows.values())))
    heal = record["heal"]
    lines = ["| model | " + " | ".join(LABELS.get(p, p) for p in probes) + " |", "|---|" + "---|" * len(probes)]
    lines += [f"| {LABELS.get(name, name)} | " + " | ".join(f"{r[p]:.2f}" for p in probes) + " |" for name, r in rows.items()]
    lines.append("| gap closed by healing | " + " | ".join(f"**{100 * record['gap_closed'][p]:.0f} %**" for p in probes) + " |")
    first, last = record["loss"]
    return "\n".join(lines) + (f"\n\nHeal: {heal['steps']} steps of {heal['batch_size']} × {heal['max_length']} tokens "
                               f"in {record['heal_seconds']:.0f} s; training loss {first:.3f} → {last:.3f}.\n")


def measure(model, tokenizer) -> dict:
    from smf.evaluate import evaluate

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
    from smf.io import write_json_atomic
    from smf.memory import MemoryConfig, retrofit, save_retrofitted
    from smf.methods.heal import HealConfig
    from smf.models import load_model
    from smf.train.stages import heal

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
    record = {"memory": memory.to_dict(), "heal": config.to_dict(), "perplexity": rows, "gap_closed": closed,
              "heal_seconds": seconds, "loss": [result.summary["first_loss"], result.summary["final_loss"]]}
    write_json_atomic(args.out, record)
    print(markdown(record))


if __name__ == "__main__":
    main()
