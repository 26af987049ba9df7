"""Can a later `smf learn` sitting correct a fact an earlier one taught?

`--protect trained` (the default) scores the rows a sitting trained at TF-IDF 0, so later
sittings train other rows: that keeps the first sitting's facts (learn check: 18 of 19), but the
old answer stays in its rows. This teaches tests/fixtures/user_facts/corrections.jsonl (10 of the
first sitting's facts with new answers, each as a statement and a question worded as taught) on
top of a first sitting, and asks the corrected questions (does the answer hold the new answer, the
old one, or neither?) and the first sitting's 10 other questions (still right?).

    .venv/bin/python studies/learn-check/correct_check.py OUT_DIR FIRST_SITTING [LABEL] [KEY=VALUE ...]

FIRST_SITTING: a folder learn_check.py wrote as OUT/sitting1 (with protect=trained, or protect=off).
KEY=VALUE: `smf learn` settings for the correcting sitting. Writes OUT_DIR/LABEL.json (default label: correct).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from learn_check import FACTS, norm, score  # this folder: Python puts a script's own folder on sys.path


def main(out: Path, first: Path, label: str, settings: dict) -> None:
    import yaml

    from smf.models import load_model
    from smf.use.learn import LearnConfig, learn

    config = LearnConfig.from_dict({k: yaml.safe_load(v) for k, v in settings.items()}, where="settings")
    rows = [json.loads(line) for line in (FACTS / "corrections.jsonl").read_text().splitlines() if line.strip()]
    new = {r["question"]: r["answer"] for r in rows if "question" in r}
    old = {r["question"]: r["answer"] for r in map(json.loads, (FACTS / "first.jsonl").read_text().splitlines()) if "question" in r}
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model(first)
    before = {a["question"]: a for a in score(model, tokenizer, FACTS / "first.jsonl")[2]}
    learn(FACTS / "corrections.jsonl", out / label, model=str(first), config=config, progress=False, say=lambda s: None)
    model, _ = load_model(out / label)
    after = score(model, tokenizer, FACTS / "first.jsonl")[2]
    corrected = [a for a in after if a["question"] in new]
    others = [a for a in after if a["question"] not in new]
    says_new = sum(norm(new[a["question"]]) in norm(a["said"]) for a in corrected)
    says_old = sum(norm(old[a["question"]]) in norm(a["said"]) for a in corrected)
    kept = sum(a["correct"] for a in others if before[a["question"]]["correct"])
    report = {
        "first_sitting": str(first), "settings": config.to_dict(),
        "corrected": {"new_answer": says_new, "old_answer": says_old, "of": len(corrected),
                      "old_right_before": sum(before[a["question"]]["correct"] for a in corrected)},
        "others_still_right": [kept, sum(before[a["question"]]["correct"] for a in others)],
        "answers": [{"question": a["question"], "old": old[a["question"]], "new": new[a["question"]], "said": a["said"]} for a in corrected],
    }
    (out / f"{label}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("first_sitting", "corrected", "others_still_right")}, indent=1))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if "=" not in a]
    if len(args) not in (2, 3):
        raise SystemExit("usage: correct_check.py OUT_DIR FIRST_SITTING [LABEL] [KEY=VALUE ...]")
    main(Path(args[0]), Path(args[1]), args[2] if len(args) == 3 else "correct", dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a))
