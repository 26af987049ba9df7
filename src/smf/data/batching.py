"""Batching: training examples and general text as token sequences, and sequences as padded batches.

Every consumer of token batches (the training loop, background statistics, kept answers, streams)
encodes and collates here, so a target's tokens are the loss everywhere in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smf.data.types import TrainExample
from smf.errors import SmfError

IGNORE = -100  # the label of a position that carries no loss


@dataclass
class Encoded:
    """One tokenized sequence; the loss is on the tokens after the prompt."""

    ids: list[int]
    n_prompt: int  # the first n_prompt tokens carry no loss


def encode_examples(examples: list[TrainExample], tokenizer, max_length: int, counts: dict | None = None) -> list[Encoded]:
    """Tokenize prompt and target separately (the target's tokens are exactly the loss).

    An over-long example keeps its whole prompt (the question) and loses the end of its target;
    one whose prompt leaves no room for a target token is dropped: cutting the question would
    teach its answer to another question. `counts`, when given, gets how many were
    "truncated" and "dropped", for the run to state.
    """
    out, truncated, dropped = [], 0, 0
    for ex in examples:
        prompt = tokenizer(ex.prompt).input_ids if ex.prompt else tokenizer("", add_special_tokens=True).input_ids
        target = tokenizer(ex.target, add_special_tokens=False).input_ids
        if not target:
            continue
        room = max_length - len(prompt)
        if room < 1:
            dropped += 1
            continue
        if len(target) > room:
            truncated += 1
            target = target[:room]
        out.append(Encoded(prompt + target, len(prompt)))
    if counts is not None:
        counts.update(truncated=truncated, dropped=dropped)
    if not out:
        why = f"all {dropped} have a prompt of max_length ({max_length}) tokens or more; raise --max-length" if dropped \
            else "empty targets?"
        raise SmfError(f"no training examples left after tokenization ({why})")
    return out


def text_chunks(texts: list[str], tokenizer, length: int) -> list[Encoded]:
    """General text as training sequences: documents joined by EOS, cut into `length` tokens."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False).input_ids + eos
    chunks = [Encoded(stream[i : i + length], 0) for i in range(0, len(stream) - length + 1, length)]
    if not chunks:
        raise SmfError(f"the text is shorter than one sequence of {length} tokens")
    return chunks


def document_sequences(texts: list[str], tokenizer, length: int, min_tokens: int = 1) -> list[Encoded]:
    """Each document its own sequence from its first token (tokenized as a prompt is), cut at `length` tokens:
    how a chat is read when the model is used, where `text_chunks` puts documents mid-sequence. A sequence of
    fewer than `min_tokens` tokens (after the cut) is left out (the SMF-on-Qwen study drops those of one token,
    min_tokens 2: they predict nothing)."""
    return [Encoded(ids[:length], 0) for ids in (tokenizer(t).input_ids for t in texts) if len(ids[:length]) >= max(min_tokens, 1)]


def step_indices(n: int, step: int, batch_size: int, seed: int, whole_epochs: bool = False) -> list[int]:
    """Example indices of optimizer step `step`: epochs of seeded permutations, back to back (a step may span
    two epochs). `whole_epochs`: each step takes its examples from one epoch, as transformers' Trainer steps
    (ceil(n / batch_size) steps an epoch, the last one the rest: fewer examples when batch_size does not divide n)."""
    if whole_epochs:
        epoch, k = divmod(step, -(-n // batch_size))
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        return [int(i) for i in perm[k * batch_size : min((k + 1) * batch_size, n)]]
    out = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(position, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.append(int(perm[i]))
    return out


def collate(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels (B, T); labels IGNORE off-target."""
    length = max(len(x.ids) for x in items)
    ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), length), dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE, dtype=torch.long)
    for row, x in enumerate(items):
        ids[row, : len(x.ids)] = torch.tensor(x.ids)
        mask[row, : len(x.ids)] = 1
        labels[row, x.n_prompt : len(x.ids)] = torch.tensor(x.ids[x.n_prompt :])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
