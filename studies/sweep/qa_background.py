"""Experiment: background statistics from question-formatted prose.

Hypothesis: with plain prose (pydoc) as background, memory rows read by question-format
tokens ("Question:", "Q:", "What", "?") look specific to the facts batches, so TF-IDF
selects and trains them, and questions on other topics (the capitals probe) drift.
A background in which the same pydoc paragraphs are wrapped in question-answer formats
gives those rows a high document frequency.

Writes DIR/bg_qa.jsonl and DIR/study.yaml: studies/controls/config.yaml (the sweep's study,
3 seeds, validation capitals of the next 60 countries) with that background and SMF-TF-IDF
at t = 300 and 1000 only. Then:
    smf compare --config DIR/study.yaml --out DIR/out
and compare with the same settings in studies/controls/results (the same study but for
the background). The published run is in studies/sweep/results/qa-background.
Run: .venv/bin/python studies/sweep/qa_background.py DIR
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

from smf.data.pydoc import pydoc_texts

ROOT = Path(__file__).resolve().parents[2]
FORMS = (
    "Question: What does this part of the Python documentation explain?\nAnswer: {p}",
    "Q: What is described here?\nA: {p}",
    "What does the reference say about this topic? {p}",
    "{p}",
)


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, doc in enumerate(pydoc_texts("background")):
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", doc) if p.strip()]
        rows.append({"text": "\n\n".join(FORMS[(i + j) % len(FORMS)].format(p=p) for j, p in enumerate(paragraphs))})
    data = folder / "bg_qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    study = yaml.safe_load((ROOT / "studies" / "controls" / "config.yaml").read_text())
    study.update(name="qa-background", methods={"smf-tfidf": {"top_t": [300, 1000], "lr": 1.0}})
    study["background"]["data"] = str(data)
    (folder / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    print(f"wrote {data} ({len(rows)} documents) and {folder / 'study.yaml'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: qa_background.py DIR")
    main(Path(sys.argv[1]))
