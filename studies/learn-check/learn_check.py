"""The learn check: does `smf learn` teach a person's facts as knowledge, and what does it cost?

For each method (smf, lora, full: `smf learn --method`) and seed, on the offline default model:

1. sitting 1 teaches tests/fixtures/user_facts/first.jsonl (20 facts, each a statement and a question with
   its answer); we ask the taught questions and the same facts in wordings written by a person and never
   given (first_heldout.jsonl), and the knowledge probes capitals (60) and world (400), against base;
2. notes: a sitting given the fixture's statements alone (a person's notes), asked the fixture's questions
   and the held-out wordings;
3. sitting 2 teaches second.jsonl on top of sitting 1: its own questions, and how many of sitting 1's
   answers still come out right (the probes are asked after sitting 1 only).

Answers are asked through the chat template as `smf ask` asks (greedy, 32 tokens) and count when they hold
the taught answer (lowercased, punctuation and a leading article dropped). Probe changes are in points, ±
the paired standard error over items (smf.stats).

    python studies/learn-check/learn_check.py OUT [--methods smf,lora,full] [--seeds 0,1,2] [--parts sitting,notes,second]
    python studies/learn-check/learn_check.py OUT --facts studies/learn-check/validation   # choose settings here
    python studies/learn-check/learn_check.py OUT --methods smf --seeds 0,1,2 --parts sitting \
        --set keep=0 --set anchors=0 --set answer_in=question --label 'smf --keep 0 --anchors 0 --answer-in question'

writes OUT/<method or label>-seed<k>.json per run and OUT/learn_check.json (all runs); `markdown(record, level)` renders
the page's block from results/learn_check.json (scripts/publish_results.py). Settings are chosen on the
validation facts in studies/learn-check/validation/ (made up for that), never on the fixture's held-out
wordings or the probes.
"""

from __future__ import annotations

import argparse
import json
import re
import string
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "user_facts"
PARTS = ("sitting", "notes", "second")


def norm(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(re.sub(r"^(the|a|an) ", "", text.strip()).split())


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def score(model, tokenizer, path: Path) -> dict:
    from smf.use.chat import answer

    out = []
    for r in (r for r in _rows(path) if "question" in r):
        said = answer(model, tokenizer, [{"role": "user", "content": r["question"]}], max_new_tokens=32)
        out.append({"question": r["question"], "answer": r["answer"], "said": said, "correct": norm(r["answer"]) in norm(said)})
    return {"right": sum(o["correct"] for o in out), "of": len(out), "answers": out}


def probes(model, tokenizer) -> dict:
    from smf.evaluate import evaluate

    tasks = evaluate(model, tokenizer, ["capitals", "world"], progress=False)["tasks"]
    return {n: {"value": t["headline"]["value"], "records": t["records"]} for n, t in tasks.items()}


def change(now: dict, base: dict) -> dict:
    """Each probe's change from base in points, with its paired standard error over items."""
    from smf.stats import paired_stderr

    return {n: [100 * (now[n]["value"] - base[n]["value"]), paired_stderr(now[n]["records"], base[n]["records"])] for n in base}


def notes_file(facts: Path, out: Path) -> Path:
    out.write_text("".join(r["text"] + "\n" for r in _rows(facts) if "text" in r))
    return out


def run(folder: Path, method: str, seed: int, parts: tuple[str, ...], facts: Path, base: dict, with_probes: bool,
        settings: dict | None = None, name: str | None = None) -> dict:
    import time

    from smf.models import load_model
    from smf.use.learn import LearnConfig, learn

    name = name or method  # the folders' prefix: the method, or a label's
    config = LearnConfig.from_dict({**(settings or {}), "method": method, "seed": seed}, where="learn check")
    record: dict = {"method": method, "seed": seed, "settings": config.to_dict()}
    first, heldout = facts / "first.jsonl", facts / "first_heldout.jsonl"
    sitting1 = folder / f"{name}-seed{seed}-sitting1"
    if "sitting" in parts or "second" in parts:
        start = time.perf_counter()
        log = learn(first, sitting1, config=config, progress=False, study_out=folder / f"{name}-seed{seed}-study.jsonl",
                    say=lambda line: None)
        model, tokenizer = load_model(sitting1)
        record["sitting"] = {"taught": score(model, tokenizer, first), "heldout": score(model, tokenizer, heldout),
                             "seconds": log["seconds"], "steps": log["steps"], "items": log["items"],
                             "wall_seconds": time.perf_counter() - start}
        if with_probes:
            now = probes(model, tokenizer)
            record["sitting"]["probes"] = {n: p["value"] for n, p in now.items()}
            record["sitting"]["change"] = change(now, base)
    if "notes" in parts:
        notes = notes_file(first, folder / "notes.txt")
        out = folder / f"{name}-seed{seed}-notes"
        log = learn(notes, out, config=config, progress=False, say=lambda line: None)
        model, tokenizer = load_model(out)
        record["notes"] = {"taught": score(model, tokenizer, first), "heldout": score(model, tokenizer, heldout),
                           "seconds": log["seconds"], "steps": log["steps"], "items": log["items"]}
    if "second" in parts and (facts / "second.jsonl").is_file():
        out = folder / f"{name}-seed{seed}-sitting2"
        log = learn(facts / "second.jsonl", out, model=str(sitting1), config=config, progress=False, say=lambda line: None)
        model, tokenizer = load_model(out)
        kept = score(model, tokenizer, first)
        right_before = {a["question"] for a in record["sitting"]["taught"]["answers"] if a["correct"]}
        record["second"] = {"taught": score(model, tokenizer, facts / "second.jsonl"),
                            "heldout": score(model, tokenizer, facts / "second_heldout.jsonl"),
                            "first_kept": [sum(a["correct"] for a in kept["answers"] if a["question"] in right_before),
                                           len(right_before)],
                            "seconds": log["seconds"], "steps": log["steps"]}
    return record


def main() -> None:
    from smf.io import write_json_atomic
    from smf.models import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--methods", default="smf,lora,full")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--facts", type=Path, default=FIXTURE, help="a folder with first.jsonl and first_heldout.jsonl "
                                                                     "(and second*.jsonl)")
    parser.add_argument("--no-probes", action="store_true")
    parser.add_argument("--label", default=None, help="the table's row for these runs (default: the method), e.g. "
                                                       "'smf, no kept answers' for runs at other settings")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a learn setting for every run (smf learn's names, e.g. keep=0 or train.top_t=3000); "
                             "a setting chosen on the validation facts, never on the fixture's held-out wordings")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 keeps a run steady beside other work)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    parts = tuple(args.parts.split(","))
    base_file = args.out / "base.json"
    base = None
    if not args.no_probes:
        if base_file.is_file():
            base = json.loads(base_file.read_text())
        else:
            model, tokenizer = load_model()
            base = probes(model, tokenizer)
            write_json_atomic(base_file, base)
    for method in args.methods.split(","):
        for seed in map(int, args.seeds.split(",")):
            name = method if not args.label else re.sub(r"[^a-z0-9]+", "-", args.label.lower()).strip("-")
            path = args.out / f"{name}-seed{seed}.json"  # a label's runs beside the default's
            if path.is_file():
                continue
            record = run(args.out, method, seed, parts, args.facts, base, not args.no_probes, _settings(args.set),
                         name)
            if args.label:
                record["label"] = args.label
            write_json_atomic(path, record)
            print(summary_line(record), flush=True)
    runs = [json.loads(p.read_text()) for p in sorted(args.out.glob("*-seed*.json"))]
    write_json_atomic(args.out / "learn_check.json", {"base": {n: b["value"] for n, b in base.items()} if base else None,
                                                      "runs": [_slim(r) for r in runs]})


def _settings(pairs: list[str]) -> dict:
    """NAME=VALUE pairs → a learn mapping (a dotted name nests: train.top_t=3000 → {"train": {"top_t": 3000}})."""
    from smf.io import parse_yaml

    out: dict = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        *sections, key = name.split(".")
        node = out
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = parse_yaml(value, f"--set {name}")
    return out


def _slim(record: dict) -> dict:
    """A run's record without the probes' per-item records (the answers to the facts stay)."""
    return record


def summary_line(r: dict) -> str:
    bits = [f"{r['method']} seed {r['seed']}"]
    for part in PARTS:
        if part in r:
            p = r[part]
            bits.append(f"{part}: taught {p['taught']['right']}/{p['taught']['of']} heldout {p['heldout']['right']}/{p['heldout']['of']}"
                        + (f" kept {p['first_kept'][0]}/{p['first_kept'][1]}" if "first_kept" in p else "")
                        + "".join(f" {n} {c[0]:+.1f}±{c[1]:.1f}" for n, c in p.get("change", {}).items())
                        + f" ({sum(p['seconds'].values()):.0f} s)")
    return "; ".join(bits)


def markdown(record: dict, level: int = 2) -> str:
    """The learn check's table: per method, mean over seeds of each count, and the probes' change from base."""
    runs = record["runs"]
    order = ("smf", "lora", "full")
    def row(r: dict) -> str:  # a method, or a method at other settings (its label)
        return r.get("label") or r["method"]

    methods = sorted(dict.fromkeys(row(r) for r in runs), key=lambda m: (order.index(m.split()[0]) if m.split()[0] in order
                                                                         else len(order), m != m.split()[0]))
    lines = ["| method | seeds | taught (sitting 1) | held-out wording | notes only: asked | notes only: held-out | "
             "second sitting kept | capitals (pts) | world (pts) | sitting (s) |", "|---|---|---|---|---|---|---|---|---|---|"]

    def mean(values: list[float]) -> str:
        if not values:
            return "–"
        return f"{values[0]:g}" if len(values) == 1 else f"{sum(values) / len(values):.1f}"

    for m in methods:
        mine = [r for r in runs if row(r) == m]

        def counts(part: str, key: str) -> str:
            got = [r[part][key]["right"] for r in mine if part in r]
            return f"{mean(got)}/{mine[0][part][key]['of']}" if got else "–"

        kept = [r["second"]["first_kept"] for r in mine if "second" in r]
        kept_s = f"{sum(k[0] for k in kept)}/{sum(k[1] for k in kept)}" if kept else "–"
        probe = {}
        for name in ("capitals", "world"):
            changes = [r["sitting"]["change"][name] for r in mine if "change" in r.get("sitting", {})]
            probe[name] = (f"{sum(c[0] for c in changes) / len(changes):+.1f} ± {max(c[1] for c in changes):.1f}"
                           if changes else "–")
        secs = [round(sum(r["sitting"]["seconds"].values())) for r in mine if "sitting" in r]
        lines.append(f"| {m} | {len(mine)} | {counts('sitting', 'taught')} | {counts('sitting', 'heldout')} | "
                     f"{counts('notes', 'taught')} | {counts('notes', 'heldout')} | {kept_s} | {probe['capitals']} | "
                     f"{probe['world']} | {mean(secs)} |")
    base = record.get("base") or {}
    if base:
        lines.append("")
        lines.append("Base: " + ", ".join(f"{n} {100 * v:.1f} %" for n, v in base.items()) + "; counts are of 20 questions "
                     "(a mean where several seeds ran); probe changes in points ± the paired standard error (the largest "
                     "over seeds).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
