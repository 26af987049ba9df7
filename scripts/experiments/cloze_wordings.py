"""More wordings of a person's questions, without a model to paraphrase them (SmolLM2-135M answers instead).

For each question whose answer occurs in one of the file's statements, add two questions made
from that statement by rule: "Complete this sentence: <the statement up to the answer>" (when
the answer is not its start) and "Fill in the blank: <the statement, the answer as ___>". Both
share the statement's words, so `smf learn --answers sentence` teaches each answered by the
same statement: one fact, three wordings that lead to it. Used by learn_damage.py / learn_check.py
(facts=OUT) to ask whether more wordings of a fact make a wording never taught find it.

    .venv/bin/python scripts/experiments/cloze_wordings.py IN.jsonl OUT.jsonl
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def find(statement: str, answer: str) -> re.Match | None:
    """Where `answer` occurs in `statement` as whole words, case-insensitive."""
    return re.search(r"(?<!\w)" + re.escape(answer) + r"(?!\w)", statement, flags=re.IGNORECASE)


def variants(statement: str, answer: str) -> list[str]:
    """The rule-made questions for one statement that holds `answer`."""
    found = find(statement, answer)
    if found is None:
        return []
    out = []
    before = statement[: found.start()].strip()
    if before:
        out.append(f"Complete this sentence: {before} ...")
    out.append(f"Fill in the blank: {statement[: found.start()]}___{statement[found.end():]}")
    return out


def main(src: Path, dst: Path) -> None:
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    statements = [r["text"] for r in rows if "text" in r]
    out = []
    for row in rows:
        out.append(row)
        if "question" not in row:
            continue
        holding = [s for s in statements if find(s, row["answer"])]
        for question in variants(holding[0], row["answer"]) if holding else []:
            out.append({"question": question, "answer": row["answer"]})
    dst.write_text("".join(json.dumps(r) + "\n" for r in out))
    print(f"{len(rows)} rows in, {len(out)} out ({len(out) - len(rows)} questions added)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: cloze_wordings.py IN.jsonl OUT.jsonl")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
