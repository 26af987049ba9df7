"""Perplexity by rolling log-likelihood over whole documents (lm-eval's
`loglikelihood_rolling`).

A document's tokens are split into consecutive target spans of at most
`max_length` tokens; every token is predicted exactly once. The first window reads
the prefix token (BOS, else EOS) and then the document; every later window reads
the `max_length` tokens that precede its last target, so a short final span still
gets a full-length context (as lm-eval does after its left truncation). Windows
from all documents are batched, right-padded, under a token budget per forward.

With a `stride`, documents are scored instead by the sliding windows of the Hugging Face
recipe "perplexity of fixed-length models", as the SMF-on-Qwen study scores WikiText-103:
windows of `max_length` tokens start every `stride` tokens (no prefix token); each
scores the tokens that the previous window did not, and its mean loss counts once per
such token. (The first window's first token has no context: the recipe weights the
window's mean by all its new tokens anyway. `sliding_loglikelihoods` keeps that
weighting, so token perplexities equal the recipe's.)

Metrics (lm-eval's, from summed log-likelihoods): word and byte perplexity and bits
per byte count words and bytes on the raw text (`Document.text`) while the model
scores `Document.scored_text`; token perplexity counts the scored tokens.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import torch

from smf.evaluate.calls import model_device, right_pad, token_logprobs


@dataclass(frozen=True)
class Window:
    """One forward row: `inputs` token ids; the last `n_targets` positions are scored
    against `targets` (the next tokens). len(targets) == n_targets <= len(inputs)."""

    inputs: list[int]
    targets: list[int]

    @property
    def n_targets(self) -> int:
        return len(self.targets)


def rolling_windows(tokens: list[int], prefix_token: int, max_length: int) -> list[Window]:
    """Windows whose targets partition `tokens` in order, each input <= max_length."""
    assert max_length >= 1
    seq = [prefix_token] + tokens  # seq[k + 1] is tokens[k]; seq[0] conditions tokens[0]
    windows = []
    for start in range(0, len(tokens), max_length):
        end = min(start + max_length, len(tokens))
        windows.append(Window(inputs=seq[max(0, end - max_length):end], targets=tokens[start:end]))
    return windows


@dataclass(frozen=True)
class Slide:
    """One sliding window: `inputs`, the index of its first scored target, and its weight."""

    inputs: list[int]
    first: int  # targets are inputs[first:], each predicted from the position before
    weight: int  # tokens this window adds to the count (its mean loss is weighted by it)


def sliding_windows(tokens: list[int], max_length: int, stride: int) -> list[Slide]:
    """The windows of the fixed-length recipe over `tokens` (see the module doc)."""
    assert 1 <= stride <= max_length
    windows, done = [], 0
    for begin in range(0, len(tokens), stride):
        end = min(begin + max_length, len(tokens))
        inputs = tokens[begin:end]
        new = end - done
        first = max(1, len(inputs) - new)
        if first < len(inputs):
            windows.append(Slide(inputs, first, new))
        done = end
        if end == len(tokens):
            break
    return windows


@torch.inference_mode()
def sliding_loglikelihoods(
    model,
    documents: list[list[int]],
    *,
    max_length: int,
    stride: int,
    max_batch_tokens: int = 4096,
    pad_id: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Each document's log-likelihood as the fixed-length recipe weights it: the sum over
    its windows of (mean target log-probability × the window's new tokens)."""
    def score(logits: torch.Tensor, w: Slide) -> float:
        targets = torch.tensor(w.inputs[w.first:], device=logits.device)
        lp, _ = token_logprobs(logits[w.first - 1:len(w.inputs) - 1], targets)
        return lp.double().mean().item() * w.weight

    windows = [(d, w) for d, toks in enumerate(documents) for w in sliding_windows(toks, max_length, stride)]
    return _score_windows(model, windows, len(documents), score, max_batch_tokens, pad_id, on_batch)


def count_words(text: str) -> int:
    """Words as lm-eval counts them: pieces of a split on runs of whitespace."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


@torch.inference_mode()
def rolling_loglikelihoods(
    model,
    documents: list[list[int]],
    *,
    prefix_token: int,
    max_length: int,
    max_batch_tokens: int = 4096,
    pad_id: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Summed log-likelihood of each tokenized document (0.0 for an empty one).

    Windows are grouped so a forward holds at most max(`max_batch_tokens`,
    `max_length`) padded tokens; the logits of a forward are [rows, T, V] floats,
    which bounds memory. `on_batch(n_windows, n_tokens)` reports progress.
    """
    def score(logits: torch.Tensor, w: Window) -> float:
        end = len(w.inputs)
        lp, _ = token_logprobs(logits[end - w.n_targets:end], torch.tensor(w.targets, device=logits.device))
        return lp.double().sum().item()

    windows = [(d, w) for d, toks in enumerate(documents) for w in rolling_windows(toks, prefix_token, max_length)]
    return _score_windows(model, windows, len(documents), score, max_batch_tokens, pad_id, on_batch)


def _score_windows(model, windows: list, n_documents: int, score: Callable, max_batch_tokens: int, pad_id: int,
                   on_batch: Callable[[int, int], None] | None) -> list[float]:
    """Run (document, window) pairs in right-padded batches, longest first (rows of a batch have
    similar lengths) under a token budget; sum `score(window's logits [T, V], window)` per document."""
    device = model_device(model)
    windows = sorted(windows, key=lambda dw: -len(dw[1].inputs))
    totals = [0.0] * n_documents
    start = 0
    while start < len(windows):
        rows = max(1, max_batch_tokens // len(windows[start][1].inputs))
        batch = windows[start:start + rows]
        start += len(batch)
        ids, _ = right_pad([w.inputs for _, w in batch], pad_id, device)
        # No attention mask: a row's padding follows its tokens, which causal attention already keeps from
        # seeing it, and without a mask the attention kernel skips the masked half (same scores).
        logits = model(input_ids=ids).logits  # [R, T, V]
        for row, (d, w) in enumerate(batch):
            totals[d] += score(logits[row], w)
        if on_batch is not None:
            on_batch(len(batch), sum(len(w.inputs) for _, w in batch))
    return totals


def perplexity_metrics(
    loglikelihoods: list[float], n_tokens: list[int], n_words: list[int], n_bytes: list[int]
) -> dict:
    """Corpus-level metrics: every ratio is summed log-likelihood over summed counts."""
    ll = sum(loglikelihoods)
    return {
        "word_perplexity": math.exp(-ll / sum(n_words)),
        "byte_perplexity": math.exp(-ll / sum(n_bytes)),
        "bits_per_byte": -ll / sum(n_bytes) / math.log(2),
        "token_perplexity": math.exp(-ll / max(1, sum(n_tokens))),
    }
