"""Where a stream's wrong answers come from: is an earlier chunk's question, answered wrongly
after the next chunk, answered with an answer that next chunk trained?

    python studies/stream/stream_interference.py runs/offline-stream

For each method: the chunk-1 questions wrong after chunk 2, how many of them picked an answer
that chunk 2's facts trained, and how many of all chunk-1 distractors are such answers (the
rate a wrong pick would have by chance). Reads the study's own per-item records.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from smf.data.facts import FactsConfig, generate_facts
from smf.data.registry import load


def main(study: Path) -> None:
    config = json.loads((study / "study.json").read_text())
    options = {k: v for k, v in config["data"].items() if k in FactsConfig.__dataclass_fields__}
    facts = generate_facts(FactsConfig(**options)).facts
    first, second = [range(*map(int, c.split(":"))) for c in ("0:12", "12:24")] if config["stream"]["chunks"] == 5 else (None, None)
    if first is None:
        sys.exit("this script reads a 5-chunk stream of the default facts")
    trained_next = {facts[i].answer for i in second}
    items = {i.id: i for i in load("facts", "eval", **options, facts=f"{first.start}:{first.stop}")}
    distractors = [c for i in items.values() for k, c in enumerate(i.choices) if k != i.answer]
    print(f"chunk-1 distractors that chunk 2 trained as answers: {sum(c in trained_next for c in distractors)} of {len(distractors)}")
    for run in sorted((study / "runs").iterdir()):
        result = run / "seed0" / "chunk2" / "result.json"
        if not result.is_file():
            continue
        records = json.loads(result.read_text())["tasks"]["chunk1"]["records"]
        wrong = [r for r in records if not r["correct"]]
        hit = sum(items[r["id"]].choices[r["pred"]] in trained_next for r in wrong)
        print(f"{run.name}: {len(wrong)} chunk-1 questions wrong after chunk 2; {hit} of them answered with a chunk-2 answer")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
