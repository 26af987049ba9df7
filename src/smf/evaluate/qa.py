"""Open questions answered by greedy generation (TriviaQA conventions).

Prompt styles:
- `plain`: lm-eval's TriviaQA prompt "Question: {question}?\\nAnswer:", stopped at
  "\\n", "." and ",".
- `chat`: the question (with a "?" appended if it ends without punctuation) as a
  user turn in the tokenizer's chat template, with the generation prompt.
  Instruct models answer in a sentence ("The capital of China is Beijing."), so
  this style keeps the first line and matches by alias substring (see `STYLES`).
  Measured on `capitals` with SmolLM2-135M-Instruct: first line + substring 40/60;
  first sentence (stops "\n", ".", ",") + substring 39/60, the one difference a
  self-correction on the same line ("El Diablo, Mexico. The capital of Mexico is
  Mexico City."); exact match 0/60 either way (the answers are sentences). The first
  line also keeps names with "." or "," whole ("St. John's", "Washington, D.C.").
  The plain prompt gets 0/60: this model ends its turn at once.
- `nq`: lm-eval's Natural Questions prompt "Q: {question}?\nA:", stopped at "\n", "."
  and ","; matched by token F1 (Lin et al.'s forgetting probe).
- `published`: the SMF-on-Qwen study's TriviaQA convention: "Question: {question}\nAnswer:"
  (no "?" added), no stop strings (32 new tokens or end of sequence), the output
  stripped; matched by `contains`.

Matching (lm-eval's exact_match with ignore_case and ignore_punctuation after its
remove_whitespace filter): the output is stripped, then output and aliases are
lowercased and ASCII punctuation is removed; any alias counts. `substring` instead
asks whether a normalised alias occurs in the normalised output as whole words.
`contains` is the published study's rule: lowercase, the words a/an/the dropped, every
character outside [a-z0-9 .-] made a space, spaces collapsed (`published_normalize`);
correct when a non-empty normalised alias is a substring of the normalised output
(inside words too). `f1` is SQuAD's token F1 (lowercase, punctuation and the words
a/an/the removed, whitespace tokens), the best over the aliases; an item's record then
holds its F1 as `correct`. All four are reported for every task; the style's `match`
picks the headline.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from smf.data.templates import chat_prompt, nq_prompt, plain_prompt, published_qa_prompt
from smf.data.types import QAItem
from smf.errors import SmfError
from smf.evaluate.generate import DECODINGS, greedy_generate
from smf.evaluate.tokens import encode_text
from smf.stats import accuracy, mean_score

_PUNCTUATION = str.maketrans("", "", string.punctuation)


@dataclass(frozen=True)
class Style:
    """How a prompt style asks, where it stops and how its answer is matched."""

    stop: tuple[str, ...]
    match: str  # "exact" | "substring"


STYLES = {
    "plain": Style(stop=("\n", ".", ","), match="exact"),
    "chat": Style(stop=("\n",), match="substring"),
    "published": Style(stop=(), match="contains"),
    "nq": Style(stop=("\n", ".", ","), match="f1"),
}
MATCHES = ("exact", "substring", "contains", "f1")
HEADLINE = {"exact": "exact_match", "substring": "substring_match", "contains": "contains_match", "f1": "f1"}


def normalize(text: str) -> str:
    """lm-eval's exact-match normalisation: lowercase, drop ASCII punctuation."""
    return text.lower().translate(_PUNCTUATION)


def exact_match(output: str, aliases: Sequence[str]) -> bool:
    # lm-eval strips the output (remove_whitespace filter) before normalising, not after.
    out = normalize(output.strip())
    return any(out == normalize(a) for a in aliases)


def substring_match(output: str, aliases: Sequence[str]) -> bool:
    """A normalised alias occurs in the normalised output as whole words."""
    out = " " + " ".join(normalize(output).split()) + " "
    for alias in aliases:
        words = " ".join(normalize(alias).split())
        if words and f" {words} " in out:
            return True
    return False


_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_OUTSIDE = re.compile(r"[^a-z0-9 .-]")


def published_normalize(text: str) -> str:
    """The published study's answer normalisation (see the module doc)."""
    text = _OUTSIDE.sub(" ", _ARTICLES.sub(" ", text.lower()))
    return " ".join(text.split())


def contains_match(output: str, aliases: Sequence[str]) -> bool:
    """A non-empty normalised alias occurs anywhere in the normalised, stripped output."""
    out = published_normalize(output.strip())
    return any(alias and alias in out for alias in map(published_normalize, aliases))


def squad_tokens(text: str) -> list[str]:
    """SQuAD's answer normalisation, as tokens."""
    text = text.lower().translate(_PUNCTUATION)
    return _ARTICLES.sub(" ", text).split()


def token_f1(output: str, aliases: Sequence[str]) -> float:
    """The best token F1 of the output against any alias (SQuAD's rule)."""
    predicted = squad_tokens(output)
    best = 0.0
    for alias in aliases:
        gold = squad_tokens(alias)
        if not predicted or not gold:
            best = max(best, float(predicted == gold))
            continue
        common = sum((Counter(predicted) & Counter(gold)).values())
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


@dataclass
class QaResult:
    metrics: dict
    records: list[dict]


def score_qa(
    model,
    tokenizer,
    items: list[QAItem],
    *,
    prompt: str = "plain",
    match: str | None = None,
    stop: Sequence[str] | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    on_batch: Callable[[int, int], None] | None = None,
    decoding: str = "greedy",
) -> QaResult:
    """Exact-match, substring and contains accuracy of greedy answers to `items`.

    `match` and `stop` default to the prompt style's (see STYLES). Records: per item
    its id, the cut output, and whether it matched (headline rule).
    `on_batch(n_items, n_tokens)` is called after each batch (progress, throughput).
    `decoding`: greedy (smf's loop) or generation_config (the model's generation config's
    repetition penalty, ended only by the tokenizer's EOS, as the published study decodes).
    """
    if prompt not in STYLES:
        raise SmfError(f"unknown prompt style '{prompt}'; choose one of {', '.join(STYLES)}")
    style = STYLES[prompt]
    match = match or style.match
    if match not in MATCHES:
        raise SmfError(f"unknown match rule '{match}'; choose one of {', '.join(MATCHES)}")
    if decoding not in DECODINGS:
        raise SmfError(f"unknown decoding '{decoding}'; choose one of {', '.join(DECODINGS)}")
    stop = tuple(style.stop if stop is None else stop)
    for item in items:
        if not item.aliases:
            raise SmfError(f"item {item.id!r}: has no answer aliases")
    ask = {"plain": plain_prompt, "published": published_qa_prompt, "nq": nq_prompt, "chat": lambda q: chat_prompt(tokenizer, q)}[prompt]
    texts = [ask(i.question) for i in items]
    prompts = [encode_text(tokenizer, t) for t in texts]
    outputs = greedy_generate(
        model, tokenizer, prompts, stop=stop, max_new_tokens=max_new_tokens, batch_size=batch_size, on_batch=on_batch,
        decoding=decoding,
    )
    exact = [exact_match(g.text, i.aliases) for g, i in zip(outputs, items)]
    sub = [substring_match(g.text, i.aliases) for g, i in zip(outputs, items)]
    contains = [contains_match(g.text, i.aliases) for g, i in zip(outputs, items)]
    f1 = [token_f1(g.text, i.aliases) for g, i in zip(outputs, items)]
    headline = {"exact": exact, "substring": sub, "contains": contains, "f1": f1}[match]
    records = [{"id": i.id, "output": g.text, "correct": ok} for i, g, ok in zip(items, outputs, headline)]
    metrics = {**accuracy("exact_match", exact), **accuracy("substring_match", sub), **accuracy("contains_match", contains),
               **mean_score("f1", f1)}
    return QaResult(metrics=metrics, records=records)
