"""Evaluator throughput on the offline default model, beside its raw forward pass.

For each task: items/s and tokens/s (tokens the model processed, padding excluded),
and the ratio to the raw forward throughput of the same model, measured right
before and after that task (the mean of the two), so load from other processes on
a shared machine hits both sides of the ratio alike. Raw forward: random tokens,
batch 16 x 128, full logits, no KV cache, no scoring.

    python bench/evaluate.py            # writes bench/results/evaluate.json and the
                                        # "## Evaluation" section of BENCHMARKS.md

Hub tasks read the hub-schema fixtures in tests/fixtures, repeated to 100 items.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from smf.evaluate import load_task, run_task  # noqa: E402
from smf.io import write_json_atomic, write_text_atomic  # noqa: E402
from smf.models import load_model  # noqa: E402

RAW_SHAPE = (16, 128)
RAW_SECONDS = 4.0
BATCH_SIZE = 16
FIXTURES = ROOT / "tests" / "fixtures"


def repeated_fixture(name: str, times: int, folder: Path) -> str:
    """The fixture's rows repeated `times` times, with distinct ids where rows have one."""
    rows = [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]
    out = folder / name
    with out.open("w") as f:
        for k in range(times):
            for row in rows:
                row = dict(row)
                for key in ("id", "question_id"):
                    if key in row:
                        row[key] = f"{row[key]}-{k}"
                f.write(json.dumps(row) + "\n")
    return str(out)


@torch.inference_mode()
def raw_forward_tokens_per_s(model) -> float:
    batch, length = RAW_SHAPE
    ids = torch.randint(100, model.config.vocab_size - 100, (batch, length), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, use_cache=False)  # warm-up
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < RAW_SECONDS:
        model(input_ids=ids, use_cache=False)
        n += 1
    return batch * length * n / (time.perf_counter() - start)


def task_specs(folder: Path) -> list[dict]:
    medmcqa = repeated_fixture("medmcqa_validation.jsonl", 5, folder)
    triviaqa = repeated_fixture("triviaqa_validation.jsonl", 5, folder)
    return [
        {"name": "medmcqa", "source": medmcqa, "as": "medmcqa (letter)"},
        {"name": "medmcqa", "source": medmcqa, "format": "cloze", "as": "medmcqa (cloze)"},
        {"name": "medmcqa", "source": medmcqa, "format": "answer_norm", "as": "medmcqa (answer_norm)"},
        {"name": "facts"},
        {"name": "facts-qa"},
        {"name": "triviaqa", "source": triviaqa},
        {"name": "capitals"},
        {"name": "capitals-plain"},
        {"name": "wikitext", "source": str(FIXTURES / "wikitext_test.jsonl")},
        {"name": "pydoc", "limit": 20},
    ]


def markdown(result: dict) -> str:
    lines = [
        "## Evaluation",
        "",
        f"`bench/evaluate.py` on {result['model']} ({result['dtype']}, {result['device']}, "
        f"{result['threads']} threads, {result['machine']}), batch size {result['batch_size']} (generation too), "
        f"{result['date']}, 1-minute load average {result['load_average_before']} before and "
        f"{result['load_average_after']} after. Tokens are those the model processed (padding excluded). Raw forward: "
        f"batch {RAW_SHAPE[0]}x{RAW_SHAPE[1]}, full logits, no cache, measured before and after each "
        "task; the ratio is the task's tokens/s over their mean.",
        "",
        "| task | kind | items | items/s | tokens/s | raw forward tok/s | ratio | headline |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for label, r in result["tasks"].items():
        h = r["headline"]
        value = f"{h['metric']} {h['value']:.3f}"
        if h.get("ci95"):
            value += f" (95% CI {h['ci95'][0]:.2f}-{h['ci95'][1]:.2f})"
        lines.append(
            f"| {label} | {r['kind']} | {r['n']} | {r['items_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
            f"{r['raw_forward_tokens_per_s']:.0f} | {r['ratio_to_raw']:.2f} | {value} |"
        )
    lines += [
        "",
        "Multiple choice packs each question into one row (context, then every choice's "
        "tail under a mask that hides the other choices) and runs the LM head only on the "
        "positions that predict choice tokens, which is why it can exceed the raw forward "
        "(whose LM head runs at every position). Generation counts prompt plus generated "
        "tokens; each generated token is a one-token forward, so its ratio is low by nature. "
        "Perplexity windows are up to 2048 tokens long (attention costs more per token than "
        "at 128) and a few documents of unequal length leave padding. The hub tasks read "
        "the small hand-written fixtures of tests/fixtures repeated five times, so their "
        "accuracies say nothing about the model; the uncertainty there is understated.",
        "",
    ]
    return "\n".join(lines)


def update_benchmarks_md(section: str) -> None:
    """Replace (or append) the '## Evaluation' section, leaving other sections alone."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nMeasured with the scripts in `bench/`.\n\n"
    pattern = re.compile(r"^## Evaluation\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    write_text_atomic(path, text)


def main() -> None:
    model, tokenizer = load_model()
    result = {
        "model": "SmolLM2-135M-Instruct (offline default)",
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": str(next(model.parameters()).device),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "batch_size": BATCH_SIZE,
        "date": time.strftime("%Y-%m-%d"),
        # Other processes on a shared machine slow small forwards (generation, short
        # batches) far more than the raw forward: read ratios with the load in mind.
        "load_average_before": round(os.getloadavg()[0], 2),
        "tasks": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tasks = [load_task(spec) for spec in task_specs(Path(tmp))]
        before = raw_forward_tokens_per_s(model)
        for task in tasks:
            # generation at the same batch as scoring, as recorded (its own batch: bench/generate_batch.py)
            r = run_task(model, tokenizer, task, batch_size=BATCH_SIZE, generate_batch_size=BATCH_SIZE, progress=False)
            after = raw_forward_tokens_per_s(model)
            raw = (before + after) / 2
            r.pop("records")
            if "source" in r["options"] and r["options"]["source"]:
                r["options"]["source"] = Path(r["options"]["source"]).name  # not the temporary folder
            r["raw_forward_tokens_per_s"] = round(raw, 1)
            r["ratio_to_raw"] = round(r["tokens_per_s"] / raw, 3)
            result["tasks"][task.label] = r
            print(f"{task.label:24s} {r['items_per_s']:8.2f} items/s {r['tokens_per_s']:8.0f} tok/s  "
                  f"raw {raw:6.0f}  ratio {r['ratio_to_raw']:.2f}", flush=True)
            before = after
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    write_json_atomic(ROOT / "bench" / "results" / "evaluate.json", result)
    update_benchmarks_md(markdown(result))


if __name__ == "__main__":
    main()
