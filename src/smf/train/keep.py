"""Kept outputs: a term in the training loss that holds some answers where the model had them.

`smf learn --keep N` asks the model, before a sitting, N questions per taught question about
made-up subjects ("What is the capital of Mirilber?", smf.use.anchors), and `--keep-general N`
N questions about the standard library, and takes its own greedy answers. `Keep.of` stores the model's next-token distributions along those answers (the
reference); each training step then adds

    weight × mean over the kept positions of KL(reference ‖ model)

to the loss, so a change that would move the model's answers about other subjects of the same
relation costs as much as the taught answer gains. With divergence "symmetric" the term adds
KL(model ‖ reference) as well: where the reference is loose (the model's answers about a made-up
subject spread over many names), the forward KL barely notices a little mass moving onto a new
token, the reverse one charges it by how unlikely the reference found that token. The term is
zero at the first step and its gradient reaches only what the method trains: with SMF, only the
rows the facts chose (the loop runs the kept sequences after the step's reads are counted, so
they choose no rows).

The reference is taken from the model the caller passes, before training: a resumed run must
pass the same reference (smf learn does not resume). Its log-probabilities are stored in float16
on the CPU: positions × vocabulary × 2 bytes (20 answers of 15 tokens on a 49k vocabulary: 30 MB).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from smf.data.batching import Encoded, collate, encode_examples
from smf.data.types import TrainExample
from smf.errors import SmfError
from smf.methods.terms import target_logprobs


DIVERGENCES = ("forward", "symmetric")


@dataclass
class Keep:
    """Sequences whose next-token distributions at their target positions training keeps near `reference`:
    a term of the training loss (smf.train.loop.Term), logged as `name`, the mean divergence before the weight."""

    chunks: list[list[Encoded]]  # forward passes of at most `batch` sequences
    reference: list[torch.Tensor]  # per chunk (kept positions, vocab) float16 log-probabilities, on the CPU
    weight: float
    pad_id: int = 0
    per_step: int = 0  # chunks in each step's term, taken in turn; 0: all of them every step
    divergence: str = "forward"  # KL(reference ‖ model), or "symmetric": that plus KL(model ‖ reference)
    name: str = "keep_kl"

    @classmethod
    @torch.no_grad()
    def of(cls, model, tokenizer, examples: list[TrainExample], max_length: int, weight: float = 1.0, batch: int = 16,
           most: int = 0, divergence: str = "forward") -> Keep:
        """The reference: `model`'s distributions along each example's target, as it is now (eval mode). `most` > 0:
        each step's term takes at most that many sequences (whole chunks of `batch`, at least one), the chunks in turn."""
        if divergence not in DIVERGENCES:
            raise SmfError(f"keep divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
        data = encode_examples(examples, tokenizer, max_length)
        chunks = [data[i : i + batch] for i in range(0, len(data), batch)]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            reference = [target_logprobs(model, _on(collate(c, pad), device)).clamp_(min=-60).half().cpu() for c in chunks]
        finally:
            model.train(was_training)
        return cls(chunks, reference, weight, pad, max(1, most // batch) if most else 0, divergence)

    @property
    def positions(self) -> int:
        return sum(len(r) for r in self.reference)

    @property
    def in_turn(self) -> bool:
        """Whether each step's term takes only some of the chunks (`per_step` of them, fewer than all)."""
        return 0 < self.per_step < len(self.chunks)

    def at(self, step: int) -> list[int]:
        """The chunks in step `step`'s term (0-based): all of them, or `per_step` in turn (wrapping round), so that
        every chunk comes at least once in any ⌈len(chunks) / per_step⌉ steps in a row."""
        n = len(self.chunks)
        if not self.in_turn:
            return list(range(n))
        return [(step * self.per_step + i) % n for i in range(self.per_step)]

    def backward(self, model, step: int = 0, *, device, backward, autocast=contextlib.nullcontext()) -> float:
        """Add weight × mean divergence (KL(reference ‖ model), plus KL(model ‖ reference) when symmetric) over the
        kept positions of step `step`'s chunks (`at`) to the gradients (through `backward`, the loop's), one
        chunk at a time; the mean divergence (before the weight)."""
        which = self.at(step)
        total, n = 0.0, sum(len(self.reference[i]) for i in which)
        for chunk, ref in ((self.chunks[i], self.reference[i]) for i in which):
            with autocast:
                logp = target_logprobs(model, _on(collate(chunk, self.pad_id), device))
            ref = ref.to(device=logp.device, dtype=torch.float32)
            kl = F.kl_div(logp, ref, log_target=True, reduction="sum")  # Σ p_ref (log p_ref − log p)
            if self.divergence == "symmetric":
                kl = kl + F.kl_div(ref, logp, log_target=True, reduction="sum")  # Σ p (log p − log p_ref)
            backward(kl * (self.weight / n))
            total += float(kl.detach())
        return total / n


def _on(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}
