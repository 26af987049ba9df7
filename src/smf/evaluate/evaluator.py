"""`evaluate(model, tokenizer, tasks)`: run tasks, return metrics and per-item records.

The training loop and the comparison study call this; `smf eval` is a thin shell
over it. The result is plain JSON-ready data:

    {"tasks": {label: {
        "task": "medmcqa", "kind": "mcq", "n": 500,
        "options": {...scoring and data options as run...},
        "headline": {"metric": "acc", "value": 0.31, "stderr": 0.02, "ci95": [0.27, 0.35]},
        "metrics": {"acc": ..., "acc_stderr": ..., "acc_ci95": [...], ...},
        "seconds": 12.3, "tokens": 51234, "items_per_s": 40.6, "tokens_per_s": 4165.0,
        "records": [{"id": ..., ...}, ...]}}}

Headline metrics: mcq `acc` (`acc_tok` for formats answer_norm and published), qa
`exact_match`, `substring_match` or `contains_match` (the style's match rule),
perplexity `word_perplexity`, or `token_perplexity` with a `stride` (lower is better;
no stderr).
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from smf.errors import SmfError
from smf.evaluate.mcq import HEADLINE as MCQ_HEADLINE
from smf.evaluate.mcq import score_mcq
from smf.evaluate.perplexity import (
    count_bytes,
    count_words,
    perplexity_metrics,
    rolling_loglikelihoods,
    sliding_loglikelihoods,
    sliding_windows,
)
from smf.evaluate.qa import HEADLINE as QA_HEADLINE
from smf.evaluate.qa import score_qa
from smf.evaluate.tasks import Task, load_task, resolve_task
from smf.evaluate.tokens import encode_text, pad_id, prefix_token_id
from smf.models import autocast

BATCH_SIZE = 16  # questions (or prompts) per forward pass: `smf eval` and a study's default
# Prompts per batch of greedy generation (qa tasks). A decoding step feeds one token a row and
# keeps only the last position's logits, so a larger batch costs little memory and saves
# forward calls: the 400-question world probe ran 1.6x as fast at 64 as at 16 on 2 CPU cores,
# every answer the same (bench/generate_batch.py, BENCHMARKS.md "Generation batch").
GENERATE_BATCH_SIZE = 64


def evaluate(
    model,
    tokenizer,
    tasks: Sequence[str | Mapping[str, Any] | Task],
    *,
    limit: int | None = None,
    batch_size: int = BATCH_SIZE,
    generate_batch_size: int = GENERATE_BATCH_SIZE,
    progress: bool = True,
    records: bool = True,
    mixed_precision: str = "auto",
) -> dict:
    """Evaluate `model` on each task (names, option mappings or loaded `Task`s).

    `limit` caps items per task where a task sets no limit of its own; `batch_size`
    is questions (or prompts) per forward, `generate_batch_size` prompts per batch of greedy
    generation (qa tasks). Loading every task happens before any
    scoring, so a bad task fails fast. Pass loaded Tasks (`load_task`) to evaluate
    the same items repeatedly, e.g. during training. `mixed_precision`: "auto" (bf16
    autocast on a GPU, full precision on the CPU), "no" or "bf16".
    """
    device = next(model.parameters()).device
    precision = autocast(device, mixed_precision)  # refuses an unknown precision before any loading
    specs = [t if isinstance(t, Task) else resolve_task(t, limit=limit) for t in tasks]
    labels = [t.label for t in specs]
    duplicate = next((label for label in labels if labels.count(label) > 1), None)
    if duplicate is not None:
        raise SmfError(f"two tasks are both called {duplicate!r}; give one of them another name with 'as'")
    loaded = [t if isinstance(t, Task) else load_task(t) for t in specs]
    was_training = model.training
    model.eval()
    try:
        with precision:
            results = {t.label: run_task(model, tokenizer, t, batch_size=batch_size, generate_batch_size=generate_batch_size,
                                          progress=progress) for t in loaded}
    finally:
        model.train(was_training)
    if not records:
        for r in results.values():
            r.pop("records")
    return {"tasks": results}


def first_items_headline(result: dict, n: int) -> float:
    """The headline of a task's first `n` items, from the records of a `run_task` result: what scoring those
    items alone gives (up to the float noise of the batches they were scored in). Training curves take their
    final point from the final evaluation this way rather than scoring the same items again."""
    records = result["records"][:n]
    if result["kind"] != "perplexity":
        return sum(float(r["correct"]) for r in records) / len(records)
    count = "words" if result["headline"]["metric"] == "word_perplexity" else "tokens"
    return math.exp(-sum(r["loglikelihood"] for r in records) / max(1, sum(r[count] for r in records)))


def run_task(model, tokenizer, task: Task, *, batch_size: int = BATCH_SIZE, generate_batch_size: int = GENERATE_BATCH_SIZE,
             progress: bool = True) -> dict:
    """Score one loaded task; see the module doc for the result's shape."""
    opts = task.options
    start = time.perf_counter()
    sliding = task.kind == "perplexity" and opts["stride"] is not None
    if task.kind == "perplexity":
        # the fixed-length recipe reads the text alone; lm-eval's rolling windows add their prefix token
        docs = [encode_text(tokenizer, d.scored_text, add_special_tokens=False if sliding else None) for d in task.items]
        n_windows = sum(len(sliding_windows(d, opts["max_length"], opts["stride"])) if sliding else math.ceil(len(d) / opts["max_length"])
                        for d in docs)
        bar = tqdm(total=n_windows, desc=task.label, unit="window", disable=not progress)
    else:
        bar = tqdm(total=len(task.items), desc=task.label, unit="q", disable=not progress)
    n_tokens = 0

    def on_batch(n_done: int, n_tok: int) -> None:
        nonlocal n_tokens
        n_tokens += n_tok
        bar.update(n_done)

    if task.kind == "mcq":
        out = score_mcq(model, tokenizer, task.items, format=opts["format"], batch_size=batch_size, on_batch=on_batch)
        metrics, recs, headline = out.metrics, out.records, MCQ_HEADLINE[opts["format"]]
    elif task.kind == "qa":
        out = score_qa(
            model, tokenizer, task.items, prompt=opts["prompt"], match=opts["match"], stop=opts["stop"],
            max_new_tokens=opts["max_new_tokens"], batch_size=generate_batch_size, on_batch=on_batch,
            decoding=opts["decoding"],
        )
        metrics, recs = out.metrics, out.records
        headline = QA_HEADLINE[opts["match"]]
    else:
        if sliding:
            lls = sliding_loglikelihoods(model, docs, max_length=opts["max_length"], stride=opts["stride"],
                                         max_batch_tokens=opts["max_batch_tokens"], pad_id=pad_id(tokenizer), on_batch=on_batch)
        else:
            lls = rolling_loglikelihoods(
                model, docs, prefix_token=prefix_token_id(tokenizer), max_length=opts["max_length"],
                max_batch_tokens=opts["max_batch_tokens"], pad_id=pad_id(tokenizer), on_batch=on_batch,
            )
        words = [count_words(d.text) for d in task.items]
        nbytes = [count_bytes(d.text) for d in task.items]
        metrics = perplexity_metrics(lls, [len(d) for d in docs], words, nbytes)
        recs = [
            {"id": d.id, "loglikelihood": round(ll, 4), "tokens": len(t), "words": w, "bytes": b}
            for d, t, ll, w, b in zip(task.items, docs, lls, words, nbytes)
        ]
        headline = "token_perplexity" if sliding else "word_perplexity"
    bar.close()
    seconds = time.perf_counter() - start
    return {
        "task": task.name,
        "kind": task.kind,
        "n": len(task.items),
        "options": {**task.data_options, **opts},
        "headline": {
            "metric": headline,
            "value": metrics[headline],
            "stderr": metrics.get(f"{headline}_stderr"),
            "ci95": metrics.get(f"{headline}_ci95"),
        },
        "metrics": metrics,
        "seconds": round(seconds, 3),
        "tokens": n_tokens,  # tokens the model processed, padding excluded
        "items_per_s": round(len(task.items) / seconds, 3),
        "tokens_per_s": round(n_tokens / seconds, 1),
        "records": recs,
    }
