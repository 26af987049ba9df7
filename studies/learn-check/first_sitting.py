"""The first sitting of learn_check.py alone: teach tests/fixtures/user_facts/first.jsonl, then ask the taught
questions, the new wordings (first_heldout.jsonl) and both knowledge probes, against base.

Run: .venv/bin/python studies/learn-check/first_sitting.py OUT_DIR [KEY=VALUE ...]   (15-50 min on 2 CPU cores)
KEY=VALUE pairs are `smf learn` settings (LearnConfig), e.g. ask_about=2 epochs=30 seed=1, and about_rows=N: the
facts file also holds N questions about each question's subject ("Tell me about Oshu.", learn.ABOUT) as rows of
the person's own, so the kept answers (--keep) are asked about them too (how --ask-about was first tried);
base_from=FILE takes the base model's probe answers from an earlier first_sitting.json or learn_check.json instead of
asking them again (greedy answers, the same on one machine; saves a few minutes).
Writes OUT_DIR/first_sitting.json: the counts, every answer (the probes' too, base's and the sitting's), each probe's
change from base in points with its paired standard error, and the training time.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from learn_check import FACTS, changes, probes, recorded_base, score  # this folder: Python puts a script's own folder on sys.path


def about_rows(path: Path, n: int) -> list[dict]:
    """The rows of `path` and, per question with a subject, `n` questions about it with the same short answer."""
    from smf.use.anchors import subject
    from smf.use.learn.config import ABOUT

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    extra = []
    for row in rows:
        where = subject(row["question"]) if "question" in row else None
        if where is not None:
            extra += [{"question": form.format(row["question"][where[0] : where[1]]), "answer": row["answer"]} for form in ABOUT[:n]]
    return rows + extra


def main(folder: Path, settings: dict) -> None:
    import yaml

    from smf.models import load_model
    from smf.use.learn import LearnConfig, learn

    n_about = int(settings.pop("about_rows", 0))
    base_from = settings.pop("base_from", None)
    config = LearnConfig.from_dict({k: yaml.safe_load(v) for k, v in settings.items()}, where="settings")
    folder.mkdir(parents=True, exist_ok=True)
    facts = FACTS / "first.jsonl"
    if n_about:
        facts = folder / "facts.jsonl"
        facts.write_text("".join(json.dumps(r) + "\n" for r in about_rows(FACTS / "first.jsonl", n_about)))
    start = time.time()
    learn(facts, folder / "sitting1", config=config, progress=False)
    took = time.time() - start
    one, tokenizer = load_model(folder / "sitting1")
    taught, heldout = score(one, tokenizer, FACTS / "first.jsonl"), score(one, tokenizer, FACTS / "first_heldout.jsonl")
    after = probes(one, tokenizer)
    before = recorded_base(Path(base_from)) if base_from else probes(load_model()[0], tokenizer)
    report = {"settings": config.to_dict() | {"about_rows": n_about}, "seconds": round(took), "taught": taught[:2],
              "heldout": heldout[:2], "base": before, "sitting1": after, "change": changes(after, before),
              "answers": taught[2] + heldout[2]}
    (folder / "first_sitting.json").write_text(json.dumps(report, indent=2) + "\n")
    c = report["change"]
    print(f"taught {taught[0]}/{taught[1]}, new wording {heldout[0]}/{heldout[1]}, capitals {c['capitals'][0]:+.1f} ± "
          f"{c['capitals'][1]:.1f}, world {c['world'][0]:+.1f} ± {c['world'][1]:.1f} ({took:.0f} s of learning)")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: first_sitting.py OUT_DIR [KEY=VALUE ...]")
    main(Path(sys.argv[1]), dict(arg.split("=", 1) for arg in sys.argv[2:]))
