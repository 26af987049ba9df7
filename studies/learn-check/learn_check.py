"""A person's check of `smf learn` on the offline default: two sittings of 20 made-up facts.

Sitting 1 teaches tests/fixtures/user_facts/first.jsonl (each fact as one statement and
one question/answer pair); sitting 2 continues from it with second.jsonl. After each we
ask, through the chat template as `smf ask` does (greedy, 32 tokens): the taught
questions, the same facts in a wording never taught (*_heldout.jsonl), the capitals
probe (60 questions, as in the study) and the world probe (400 questions). An answer counts when the taught answer occurs in
it (lowercased, punctuation and a leading article dropped).
Run: .venv/bin/python studies/learn-check/learn_check.py OUT_DIR [KEY=VALUE ...]   (about 15 min on 2 CPU cores)
KEY=VALUE pairs are `smf learn` settings (LearnConfig), e.g. count=target top_t=100, and
background=... (`smf learn --background`, e.g. docstring-questions), and replay=N: each sitting's
facts file also holds N questions about the standard library (docstring_questions("background"))
with the base model's own chat answers (greedy, cut at the last full sentence), so the training
also sees the model's own answering style (an experiment, not an `smf learn` option); anchor_rows=N: each
sitting's facts file also holds N questions per question about made-up subjects (studies/learn-check/anchors.py)
with the base model's own answers, taught (anchors=N, `smf learn --anchors`, counts them as background instead).
answers=sentence (today's default) or answers=as-given is `smf learn --answers`; scoring always looks
for the short answer. Runs recorded before that option existed taught answers as given.
base_from=FILE takes the base model's answers (probes, and the first sitting's questions where recorded) from an earlier
learn_check.json or first_sitting.json instead of asking them again; sitting1=DIR starts from a first sitting already taught with the same
settings (e.g. by first_sitting.py, OUT/sitting1) and teaches the second only.
"""

from __future__ import annotations

import json
import re
import string
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FACTS = ROOT / "tests" / "fixtures" / "user_facts"


def norm(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(re.sub(r"^(the|a|an) ", "", text.strip()).split())


def score(model, tokenizer, path: Path) -> tuple[int, int, list[dict]]:
    from smf.use.chat import answer

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "question" in r]
    out = []
    for r in rows:
        said = answer(model, tokenizer, [{"role": "user", "content": r["question"]}], max_new_tokens=32)
        out.append({"question": r["question"], "answer": r["answer"], "said": said, "correct": norm(r["answer"]) in norm(said)})
    return sum(o["correct"] for o in out), len(out), out


def probes(model, tokenizer) -> dict:
    """The knowledge probes' accuracies and per-item records (for the paired standard error)."""
    from smf.evaluate import evaluate

    tasks = evaluate(model, tokenizer, ["capitals", "world"], progress=False)["tasks"]
    return {name: tasks[name]["headline"]["value"] for name in tasks} | {"records": {n: t["records"] for n, t in tasks.items()}}


def changes(now: dict, base: dict) -> dict:
    """Each probe's change from base in points, with its paired standard error over items."""
    from smf.stats import paired_stderr

    return {n: [100 * (now[n] - base[n]), paired_stderr(now["records"][n], base["records"][n])] for n in base["records"]}  # points


def recorded_base(path: Path) -> dict:
    """The base model's probe accuracies and records (and, from a learn_check.json, its answers to the first sitting's
    questions) as an earlier run recorded them: greedy answers, the same on one machine."""
    base = json.loads(Path(path).read_text())["base"]
    if "records" not in base:
        raise SystemExit(f"{path}: no base probe records in it (written before they were kept); drop base_from")
    return {n: base[n] for n in base["records"]} | {k: base[k] for k in ("records", "first_taught") if k in base}


def own_answers(model, tokenizer, n: int) -> list[dict]:
    """n questions about the standard library with the model's own chat answers, cut at a sentence's end."""
    from anchors import own_answer
    from smf.data.docstrings import docstring_questions

    pairs = docstring_questions("background")
    return [{"question": q, "answer": own_answer(model, tokenizer, q, max_new_tokens=64)} for q, _ in pairs[:: max(1, len(pairs) // n)][:n]]


def with_rows(path: Path, rows: list[dict], out: Path) -> Path:
    out.write_text(path.read_text() + "".join(json.dumps(r) + "\n" for r in rows))
    return out


def main(folder: Path, settings: dict) -> None:
    import yaml

    from smf.models import load_model
    from smf.use.learn import LearnConfig, learn

    background = settings.get("background", "pydoc")  # a LearnConfig shortcut: stays in settings
    replay = int(settings.pop("replay", 0))
    n_anchors = int(settings.pop("anchor_rows", 0))
    base_from = settings.pop("base_from", None)
    taught_first = settings.pop("sitting1", None)
    config = LearnConfig.from_dict({k: yaml.safe_load(v) for k, v in settings.items()}, where="settings")

    folder.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    base, tokenizer = load_model()
    base_probes = recorded_base(base_from) if base_from else probes(base, tokenizer)
    own = own_answers(base, tokenizer, replay) if replay else []
    anchored = {}
    if n_anchors:
        from anchors import anchor_rows

        anchored = {name: anchor_rows(base, tokenizer, FACTS / f"{name}.jsonl", n_anchors) for name in ("first", "second")}
    extra = {name: own + anchored.get(name, []) for name in ("first", "second")}
    first = with_rows(FACTS / "first.jsonl", extra["first"], folder / "first_taught.jsonl") if extra["first"] else FACTS / "first.jsonl"
    second = with_rows(FACTS / "second.jsonl", extra["second"], folder / "second_taught.jsonl") if extra["second"] else FACTS / "second.jsonl"
    report["base"] = {**base_probes,
                      "first_taught": base_probes.get("first_taught") or score(base, tokenizer, FACTS / "first.jsonl")[:2]}
    sitting1 = Path(taught_first) if taught_first else folder / "sitting1"
    if not taught_first:
        learn(first, sitting1, config=config, progress=False)
    one, _ = load_model(sitting1)
    t1 = score(one, tokenizer, FACTS / "first.jsonl")
    h1 = score(one, tokenizer, FACTS / "first_heldout.jsonl")
    p1 = probes(one, tokenizer)
    report["sitting1"] = {"taught": t1[:2], "heldout": h1[:2], **p1, "change": changes(p1, base_probes), "answers": t1[2] + h1[2]}
    learn(second, folder / "sitting2", model=str(sitting1), config=config, progress=False)
    two, _ = load_model(folder / "sitting2")
    t2 = score(two, tokenizer, FACTS / "second.jsonl")
    kept = score(two, tokenizer, FACTS / "first.jsonl")
    right_before = {a["question"] for a in t1[2] if a["correct"]}
    still = sum(a["correct"] for a in kept[2] if a["question"] in right_before)
    p2 = probes(two, tokenizer)
    h2 = score(two, tokenizer, FACTS / "second_heldout.jsonl")
    report["sitting2"] = {"taught": t2[:2], "first_still_right": [still, len(right_before)], "heldout": h2[:2], **p2,
                          "change": changes(p2, base_probes), "answers": t2[2] + h2[2], "first_answers": kept[2]}
    report["settings"] = config.to_dict() | {"background": background, "replay": replay, "anchor_rows": n_anchors,
                                             "sitting1": taught_first}
    report["replayed"] = own
    report["anchor_rows"] = anchored
    (folder / "learn_check.json").write_text(json.dumps(report, indent=2) + "\n")
    b, s1, s2 = report["base"], report["sitting1"], report["sitting2"]
    def probe(s: dict, name: str) -> str:
        return f"{100 * s[name]:.1f}" + (f" ({s['change'][name][0]:+.1f} ± {s['change'][name][1]:.1f})" if "change" in s else "")

    print("| model | taught questions | new wording | first sitting's facts still right | capitals | world |")
    print("|---|---|---|---|---|---|")
    print(f"| base | {b['first_taught'][0]}/20 (first sitting's) | – | – | {probe(b, 'capitals')} | {probe(b, 'world')} |")
    print(f"| after sitting 1 | {s1['taught'][0]}/20 | {s1['heldout'][0]}/20 | – | {probe(s1, 'capitals')} | {probe(s1, 'world')} |")
    print(f"| after sitting 2 | {s2['taught'][0]}/20 | {s2['heldout'][0]}/20 | {s2['first_still_right'][0]}/{s2['first_still_right'][1]} | "
          f"{probe(s2, 'capitals')} | {probe(s2, 'world')} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: learn_check.py OUT_DIR [KEY=VALUE ...]")
    main(Path(sys.argv[1]), dict(arg.split("=", 1) for arg in sys.argv[2:]))
