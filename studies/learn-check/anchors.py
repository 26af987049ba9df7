"""Anchors: the person's questions about other, made-up subjects, answered as the base model answers them.

The learn check's damage is rows shared by a relation: "What is the capital of Oshu?" and
"What is the capital of France?" read mostly the same rows at the answer, so teaching Kelbrin
moves France's answer too (studies/learn-check/README.md, "Where the damage comes from"). An anchor is one of the
person's questions with its subject (a run of capitalised words after the first word, or a
word with a digit or hyphen) swapped for a made-up name, taught with the base model's own
greedy answer (cut at its last full sentence). Trained beside the facts, an anchor pulls the
rows every subject of the relation reads back toward what the model said before; only the rows
the taught subject reads alone are free to move. Questions without such a subject get none.

    .venv/bin/python studies/learn-check/anchors.py IN.jsonl OUT.jsonl [N]   (N anchors per question, default 1)
Used by learn_check.py as anchor_rows=N (taught as facts); `smf learn --anchors N` counts the same
questions as background instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from smf.use.anchors import anchor_questions  # the same made-up subjects as smf learn --anchors


def own_answer(model, tokenizer, question: str, max_new_tokens: int = 48) -> str:
    """The model's greedy chat answer, cut at its last full sentence."""
    from smf.use.chat import answer

    said = answer(model, tokenizer, [{"role": "user", "content": question}], max_new_tokens=max_new_tokens)
    cut = said[: said.rfind(".") + 1] if "." in said else said
    return cut.strip() or said.strip()


def anchor_rows(model, tokenizer, path: Path, n: int, seed: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    questions = anchor_questions([r["question"] for r in rows if "question" in r], n, seed)
    return [{"question": q, "answer": own_answer(model, tokenizer, q)} for q in questions]


if __name__ == "__main__":
    from smf.models import load_model

    model, tokenizer = load_model()
    rows = anchor_rows(model, tokenizer, Path(sys.argv[1]), int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    Path(sys.argv[2]).write_text("".join(json.dumps(r) + "\n" for r in rows))
