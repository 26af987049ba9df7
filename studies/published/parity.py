"""The published SMF-on-Qwen study's metrics as smf computes them, beside the published
evaluation code's own values, on the parity items of tests/fixtures/parity.

smf's named tasks `medmcqa-published` (answer-normalised and letter formats),
`triviaqa-published` and `wikitext-103-published` (sliding windows 1024 / stride 512 and
64 / 32) run with the offline default model in fp32 on the fixture files, as
tests/evaluate/test_published_parity.py runs them; the published code's values are the
fixtures' reference.json (what that code gives on the same files and model). Writes the
record atomically to the path given (default studies/published/results/parity.json) and
prints the table `markdown(record, level)` renders from it: the page's block
`results:parity`, rendered by scripts/publish_results.py (smf is imported only inside main(),
so rendering is cheap).

    HF_HUB_OFFLINE=1 .venv/bin/python studies/published/parity.py [OUT.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARITY = ROOT / "tests" / "fixtures" / "parity"
HERE = Path(__file__).resolve().parent

# (label, task spec, what reference.json holds for it)
CHECKS = [
    ("MedMCQA accuracy, answer-normalised",
     {"name": "medmcqa-published", "source": "medmcqa_parity.jsonl", "format": "published"}, ("medmcqa", "answer_norm")),
    ("MedMCQA accuracy, letter",
     {"name": "medmcqa-published", "source": "medmcqa_parity.jsonl", "format": "published_letter"}, ("medmcqa", "letter")),
    ("TriviaQA alias contained", {"name": "triviaqa-published", "source": "triviaqa_parity.jsonl"}, ("triviaqa", None)),
    ("WikiText-103 token perplexity, window 1024 / stride 512",
     {"name": "wikitext-103-published", "source": "wikitext_parity.jsonl", "max_length": 1024, "stride": 512},
     ("wikitext", "window_1024_stride_512")),
    ("WikiText-103 token perplexity, window 64 / stride 32",
     {"name": "wikitext-103-published", "source": "wikitext_parity.jsonl", "max_length": 64, "stride": 32},
     ("wikitext", "window_64_stride_32")),
]


def published(reference: dict, kind: str, key: str | None) -> dict:
    """The published code's value for one check, and what it gave per item (or token count)."""
    ref = reference[kind]
    if kind == "medmcqa":
        return {"value": ref[f"{key}_acc"], "n": ref["n_after_single_filter"], "ids": ref["ids"], "items": ref[f"{key}_pred"]}
    if kind == "triviaqa":
        return {"value": ref["alias_contains_acc"], "n": ref["n"], "items": ref["normalized_predictions"]}
    return {"value": ref[key]["token_ppl"], "tokens": ref[key]["tokens"]}


def measured(kind: str, out: dict) -> dict:
    """smf's value for one check, and its per-item predictions (or token count), as the reference holds them."""
    from smf.evaluate.qa import published_normalize

    row = {"metric": out["headline"]["metric"], "value": out["headline"]["value"]}
    if kind == "medmcqa":
        return {**row, "n": out["n"], "ids": [r["id"] for r in out["records"]], "items": [r["pred"] for r in out["records"]]}
    if kind == "triviaqa":
        return {**row, "n": out["n"], "items": [published_normalize(r["output"]) for r in out["records"]]}
    return {**row, "tokens": out["records"][0]["tokens"]}


def agreement(row: dict) -> str:
    """How closely smf's row matches the published code's: per item, or in relative perplexity."""
    smf, ref = row["smf"], row["published"]
    if "items" in ref:
        same = sum(a == b for a, b in zip(smf["items"], ref["items"])) if smf.get("ids", ref.get("ids")) == ref.get("ids") else 0
        what = "predictions" if row["kind"] == "medmcqa" else "normalised answers"
        return f"{same} / {len(ref['items'])} {what} the same"
    tokens = "the same tokens" if smf["tokens"] == ref["tokens"] else f"{smf['tokens']} tokens against {ref['tokens']}"
    return f"{100 * abs(smf['value'] / ref['value'] - 1):.4f} % apart, {tokens}"


def markdown(record: dict, level: int = 2) -> str:
    """The page's table: each published metric as smf computes it, next to the published code's
    value on the same items and model, and how closely they agree. (No heading, so `level`
    changes nothing.)"""
    lines = ["| metric | items | smf | published code | agreement |", "|---|---|---|---|---|"]
    for row in record["checks"]:
        smf, ref = row["smf"], row["published"]
        items = f"{ref['n']}" if "n" in ref else f"{ref['tokens']} tokens"
        lines.append(f"| {row['label']} | {items} | {smf['value']:.4f} | {ref['value']:.4f} | {agreement(row)} |")
    return "\n".join(lines) + (f"\n\n{record['model']}, {record['dtype']}, {record['device']}; "
                               f"{record['seconds']:.0f} s for all five.\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default=str(HERE / "results" / "parity.json"))
    args = parser.parse_args()
    import torch

    from smf.evaluate import evaluate
    from smf.io import write_json_atomic
    from smf.models import load_model

    reference = json.loads((PARITY / "reference.json").read_text())
    model, tokenizer = load_model()  # the offline default, fp32 on the CPU
    start = time.perf_counter()
    checks = []
    for label, spec, (kind, key) in CHECKS:
        torch.manual_seed(0)
        spec = {**spec, "source": str(PARITY / spec["source"])}
        out = evaluate(model, tokenizer, [spec], progress=False)["tasks"][spec["name"]]
        checks.append({"label": label, "kind": kind, "task": {**spec, "source": str(Path(spec["source"]).relative_to(ROOT))},
                       "smf": measured(kind, out), "published": published(reference, kind, key)})
    record = {"model": "offline default (SmolLM2-135M-Instruct)", "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
              "device": str(next(model.parameters()).device), "seconds": time.perf_counter() - start,
              "reference": str((PARITY / "reference.json").relative_to(ROOT)), "checks": checks}
    write_json_atomic(args.out, record)
    print(markdown(record))


if __name__ == "__main__":
    main()
