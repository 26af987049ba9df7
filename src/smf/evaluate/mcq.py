"""Multiple-choice questions scored by log-likelihood, in three formats.

- `letter`: lm-eval's MedMCQA prompt, the choices listed under letters; the
  continuations " A", " B", ... are scored (one token each, so the whole question
  costs one context pass).
- `cloze`: "Question: {q}\\nAnswer:" followed by " {choice text}"; lm-eval's
  cloze convention. The right format for a small model: SmolLM2-135M is at chance
  with letters even on easy questions (DESIGN.md, probe findings).
- `answer_norm`: the letter prompt (choices listed) followed by " {choice text}",
  chosen by mean log-probability per token of the answer text.
- `published`: the SMF-on-Qwen study's own MedMCQA scoring, as its evaluation code
  does it: its prompt ("Medical exam question:" header, lettered options, "Answer:"),
  continuations " A. {option}" ... " D. {option}", no special tokens, the choice with
  the highest mean log-probability per continuation token. `published_letter`: the
  same prompt with the continuations " A" ... " D" (its letter mode).

Every format reports three accuracies from the same scores: `acc` (argmax of the
summed log-likelihood), `acc_norm` (divided by the choice's characters, lm-eval's
acc_norm) and `acc_tok` (divided by its tokens). The headline is `acc` for letter
and cloze and `acc_tok` for answer_norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from smf.data.templates import LETTERS, cloze_prompt, letter_prompt, published_mcq_prompt
from smf.data.types import MCQItem
from smf.errors import SmfError
from smf.evaluate.loglik import Request, score_requests
from smf.evaluate.tokens import encode_pair, pad_id
from smf.stats import accuracy

FORMATS = ("letter", "cloze", "answer_norm", "published", "published_letter")
HEADLINE = {"letter": "acc", "cloze": "acc", "answer_norm": "acc_tok", "published": "acc_tok", "published_letter": "acc"}
NO_SPECIAL_TOKENS = ("published", "published_letter")  # the published code encodes with add_special_tokens=False


def prompt_and_choices(item: MCQItem, format: str) -> tuple[str, list[str]]:
    """The context and the choice strings (without the " " delimiter) for `format`."""
    if format == "letter":
        return letter_prompt(item), list(LETTERS[: len(item.choices)])
    if format == "cloze":
        return cloze_prompt(item), list(item.choices)
    if format == "answer_norm":
        return letter_prompt(item), list(item.choices)
    if format == "published":
        return published_mcq_prompt(item), [f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices)]
    if format == "published_letter":
        return published_mcq_prompt(item), list(LETTERS[: len(item.choices)])
    raise SmfError(f"unknown multiple-choice format '{format}'; choose one of {', '.join(FORMATS)}")


def check_item(item: MCQItem) -> None:
    """Reject an item the scorer cannot score, naming it."""
    at = f"item {item.id!r}: "
    if not 2 <= len(item.choices) <= len(LETTERS):
        raise SmfError(f"{at}needs 2 to {len(LETTERS)} choices, has {len(item.choices)}")
    if not 0 <= item.answer < len(item.choices):
        raise SmfError(f"{at}answer index {item.answer} is outside 0..{len(item.choices) - 1}")
    if any(not c.strip() for c in item.choices):
        raise SmfError(f"{at}has an empty choice")


def build_requests(tokenizer, items: list[MCQItem], format: str) -> list[Request]:
    requests = []
    for item in items:
        context, choices = prompt_and_choices(item, format)
        special = False if format in NO_SPECIAL_TOKENS else None
        pairs = [encode_pair(tokenizer, context, " " + choice, add_special_tokens=special) for choice in choices]
        # The context's encoding does not depend on the continuation: share it.
        requests.append(Request(context=pairs[0][0], continuations=[cont for _, cont in pairs]))
    return requests


@dataclass
class McqResult:
    metrics: dict
    records: list[dict]


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)  # first of ties, like np.argmax


def score_mcq(
    model,
    tokenizer,
    items: list[MCQItem],
    *,
    format: str = "letter",
    batch_size: int = 16,
    max_length: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> McqResult:
    """Accuracy of `model` on `items` (see the module doc for formats and metrics).

    `on_batch(n_items, n_tokens)` is called after each forward (progress, throughput).

    Records: per item its id, gold answer, predicted index (headline rule),
    correctness, and per choice the summed log-probability and token count.
    """
    if format not in FORMATS:
        raise SmfError(f"unknown multiple-choice format '{format}'; choose one of {', '.join(FORMATS)}")
    for item in items:
        check_item(item)
    requests = build_requests(tokenizer, items, format)
    scores = score_requests(
        model, requests, batch_size=batch_size, pad_id=pad_id(tokenizer), max_length=max_length, on_batch=on_batch
    )
    headline = HEADLINE[format]
    correct = {"acc": [], "acc_norm": [], "acc_tok": []}
    records = []
    for item, s in zip(items, scores):
        choices = prompt_and_choices(item, format)[1]
        preds = {
            "acc": _argmax(s.logprobs),
            "acc_norm": _argmax([lp / len(c) for lp, c in zip(s.logprobs, choices)]),
            "acc_tok": _argmax([lp / n for lp, n in zip(s.logprobs, s.n_tokens)]),
        }
        for name, pred in preds.items():
            correct[name].append(pred == item.answer)
        records.append({
            "id": item.id,
            "answer": item.answer,
            "pred": preds[headline],
            "correct": preds[headline] == item.answer,
            "logprobs": [round(lp, 4) for lp in s.logprobs],
            "n_tokens": s.n_tokens,
        })
    metrics = {}
    for name in ("acc", "acc_norm", "acc_tok"):
        metrics.update(accuracy(name, correct[name]))
    return McqResult(metrics=metrics, records=records)
