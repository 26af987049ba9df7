"""SMF's anchors from its training prompts: questions about made-up subjects that `smf learn` found
cut SMF's forgetting (studies/learn-check), as settings any SMF run (and a study's sweep) can use.

Teaching "Question: Which enzyme does Dixtalolol inhibit?" moves rows that every question of the
relation reads, whatever the drug. An anchor is a training prompt with its subject swapped for a
made-up name (smf.data.anchors: "Question: Which enzyme does Tosmiro inhibit?"), answered by the
model before training: greedily, its memory reading zeros, the first line or sentence of its answer.
The rows the anchors read can be left untrained (their df set to every background document, so
TF-IDF scores them 0), and their answers kept by a KL term to the base (smf.methods.terms.BaseKl).
"""

from __future__ import annotations

import torch

from smf.data.anchors import anchor_questions, first_sentence
from smf.data.batching import Encoded, collate
from smf.memory.retrofit import memory_layers, memory_reading_zeros
from smf.models import greedy_batches


def anchor_items(model, tokenizer, data: list[Encoded], n: int, seed: int, max_new_tokens: int = 16,
                 batch: int = 32) -> tuple[list[str], list[Encoded]]:
    """(questions, items): `n` anchors per distinct training prompt that names a subject, each with the model's own
    answer as its target (an anchor answered with nothing is left out)."""
    prompts = list(dict.fromkeys(tokenizer.decode(e.ids[: e.n_prompt], skip_special_tokens=True) for e in data if e.n_prompt))
    questions = anchor_questions(prompts, n, seed=seed)
    items, was_training = [], model.training
    model.eval()
    try:
        with memory_reading_zeros(model):
            made = greedy_batches(model, tokenizer, questions, max_new_tokens=max_new_tokens, batch=batch, mixed_precision="no")
    finally:
        model.train(was_training)
    for question, text in zip(questions, made):
        said = first_sentence(text.split("\n")[0])
        if said:
            ids = tokenizer(question, add_special_tokens=False)["input_ids"]
            items.append(Encoded(ids + tokenizer(" " + said, add_special_tokens=False)["input_ids"], len(ids)))
    return questions, items


def rows_read(model, items: list[Encoded], pad_id: int, batch: int = 32) -> dict[int, torch.Tensor]:
    """Per memory layer, the rows (N,) bool that any item's real tokens read."""
    memories = memory_layers(model)
    device = next(model.parameters()).device
    read = {i: torch.zeros(m.slots, dtype=torch.bool, device=m.values.device) for i, m in memories.items()}
    recording = {i: m.record for i, m in memories.items()}
    try:
        for memory in memories.values():
            memory.record = True
        with torch.no_grad():
            for k in range(0, len(items), batch):
                b = collate(items[k : k + batch], pad_id)
                model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device), use_cache=False)
                for i, memory in memories.items():
                    read[i] |= memory.read_counts() > 0
    finally:
        for i, memory in memories.items():
            memory.record = recording[i]
    return read
