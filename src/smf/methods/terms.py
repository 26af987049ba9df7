"""Terms a method adds to the training loss (smf.train.loop.Term) and the text they read: general text in
windows taken in turn (`general_windows`, `InTurn`), and the divergence of the model's next-token
distributions from the model's own base (`BaseKl`: kl-anchor's term, SMF's kept answers).
"""

from __future__ import annotations

import random
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from smf.data.batching import IGNORE, Encoded, collate
from smf.data.sources import general_texts
from smf.errors import SmfError


def target_logprobs(model: nn.Module, batch: dict) -> torch.Tensor:
    """Log-probabilities (n, vocab) in fp32 of the next token at each position whose next token is a label,
    in row-major order over the batch (the LM head runs on those positions only)."""
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = core.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
    where = batch["labels"][:, 1:] != IGNORE
    return core.get_output_embeddings()(hidden[:, :-1][where]).float().log_softmax(-1)


def next_token_targets(batch: dict) -> torch.Tensor:
    """The labels `target_logprobs` predicts, in the same order."""
    labels = batch["labels"][:, 1:]
    return labels[labels != IGNORE]


def general_windows(spec, tokenizer, length: int, count: int, seed: int, where: str) -> list[Encoded]:
    """Up to `count` windows of `length` tokens (at least 8) of the general text `spec` (a data source), every token
    a loss token, the documents in a seeded order; only as many documents are tokenized as the windows need."""
    texts = general_texts(spec, where)
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    windows: list[Encoded] = []
    for i in order:
        ids = tokenizer(texts[i], add_special_tokens=False)["input_ids"]
        windows += [Encoded(ids[k : k + length], 0) for k in range(0, len(ids), length) if len(ids[k : k + length]) >= 8]
        if len(windows) >= count:
            break
    if not windows:
        raise SmfError(f"{where}: the general text {spec!r} holds no window of 8 tokens or more; give longer text")
    return windows[:count]


class InTurn:
    """Windows taken `per_step` at a time, in turn (wrapping round): step s takes the same ones on every run."""

    def __init__(self, windows: list[Encoded], per_step: int, pad_id: int):
        self.windows, self.per_step, self.pad_id = windows, per_step, pad_id

    def batch(self, step: int, device) -> dict:
        n = len(self.windows)
        items = [self.windows[(step * self.per_step + i) % n] for i in range(self.per_step)]
        return {k: v.to(device) for k, v in collate(items, self.pad_id).items()}


class BaseKl:
    """weight × the mean over the step's target tokens of KL(base ‖ model), as a loss term named `name`. The base is
    `frozen` (a copy of the starting model), or the training model within `as_base(model)` (a context: LoRA's
    adapters off, SMF's memory reading zeros)."""

    def __init__(self, items: InTurn, weight: float, frozen=None, as_base: Callable | None = None, name: str = "kl_anchor"):
        self.items, self.weight, self.frozen, self.name = items, weight, frozen, name
        self.as_base = as_base or (lambda model: model.disable_adapter())

    def reference(self, model, batch) -> torch.Tensor:
        with torch.no_grad():
            if self.frozen is not None:
                return target_logprobs(self.frozen, batch)
            with self.as_base(model):
                return target_logprobs(model, batch)

    def backward(self, model, step, *, device, autocast, backward) -> float:
        batch = self.items.batch(step, device)
        with autocast:
            ref = self.reference(model, batch)
            logp = target_logprobs(model, batch)
        kl = F.kl_div(logp, ref, log_target=True, reduction="batchmean")  # Σ p_base (log p_base − log p) / tokens
        backward(kl * self.weight)
        return float(kl.detach())
