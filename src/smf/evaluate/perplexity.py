"""Perplexity by rolling log-likelihood over whole documents (lm-eval's
`loglikelihood_rolling`).

A document's tokens are split into consecutive target spans of at most
`max_length` tokens; every token is predicted exactly once. The first window reads
the prefix token (BOS, else EOS) and then the document; every later window reads
the `max_length` tokens that precede its last target, so a short final span still
gets a full-length context (as lm-eval does after its left truncation). Windows
from all documents are batched, right-padded, under a token budget per forward.

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
    device = model_device(model)
    windows = [(d, w) for d, toks in enumerate(documents) for w in rolling_windows(toks, prefix_token, max_length)]
    # Longest first, so rows of a batch have similar lengths.
    windows.sort(key=lambda dw: -len(dw[1].inputs))
    totals = [0.0] * len(documents)
    start = 0
    while start < len(windows):
        rows = max(1, max_batch_tokens // len(windows[start][1].inputs))
        batch = windows[start:start + rows]
        start += len(batch)
        ids, mask = right_pad([w.inputs for _, w in batch], pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask).logits  # [R, T, V]
        for row, (d, w) in enumerate(batch):
            end = len(w.inputs)
            lp, _ = token_logprobs(logits[row, end - w.n_targets:end], torch.tensor(w.targets, device=device))
            totals[d] += lp.double().sum().item()
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
