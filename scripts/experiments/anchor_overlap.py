"""Which rows a first sitting's anchors read, and how many of the rows the sitting trained are among them.

Run: .venv/bin/python scripts/experiments/anchor_overlap.py SITTING_DIR SEED [FACTS]   (about a minute on 2 CPU cores)
SITTING_DIR is a first sitting `smf learn` wrote with --anchors 1 and --protect trained (first_sitting.py OUT,
OUT/sitting1) from FACTS (default tests/fixtures/user_facts/first.jsonl) at --seed SEED. The anchors are asked again
as the sitting asked them: the model with its memory reading zeros (the retrofitted model it started from) answers
the same made-up-subject questions, and their reads are counted as `smf learn` counts them. The trained rows are the
ones the sitting saved in protected_rows.safetensors. Prints, per memory layer, the rows read, trained, and both.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(folder: Path, seed: int, facts: Path) -> None:
    from safetensors.torch import load_file

    from smf.memory import memory_reading_zeros
    from smf.models import load_model
    from smf.train.stages import reads_as_documents
    from smf.use.learn import PROTECTED_FILE, LearnConfig, _anchors, read_facts

    model, tokenizer = load_model(folder)
    with memory_reading_zeros(model):
        _, anchors = _anchors(model, tokenizer, read_facts(facts), 1, seed, print, "read")
        reads = reads_as_documents(model, tokenizer, anchors, LearnConfig().max_length)
    trained = load_file(str(folder / PROTECTED_FILE))
    print(f"{len(anchors)} anchors")
    for layer, df in sorted(reads.df.items()):
        read, rows = df > 0, trained[f"rows.{layer}"]
        print(f"layer {layer}: {int(read.sum()):,} of {len(df):,} rows read by an anchor, {len(rows):,} trained, "
              f"{int(read[rows].sum()):,} of them read by an anchor")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit("usage: anchor_overlap.py SITTING_DIR SEED [FACTS]")
    main(Path(sys.argv[1]), int(sys.argv[2]),
         Path(sys.argv[3]) if len(sys.argv) == 4 else ROOT / "tests" / "fixtures" / "user_facts" / "first.jsonl")
