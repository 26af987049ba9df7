"""Healing: train every memory parameter (queries, keys, values, gates) on general text.

The base model stays frozen. Needed for `replacement` mode, where the memory must
learn to stand in for the FFN it replaced; optional for `additive` mode.
"""

from __future__ import annotations

from pathlib import Path

from smf.errors import SmfError
from smf.memory.retrofit import memory_layers, save_retrofitted
from smf.methods.base import Method


class HealMethod(Method):
    name = "heal"
    default_lr = 1e-3

    def prepare(self, model, model_dir):
        memories = memory_layers(model)
        if not memories:
            raise SmfError("heal needs a model with memory layers; run smf retrofit first")
        model.requires_grad_(False)
        for memory in memories.values():
            memory.requires_grad_(True)
            memory.sparse_grad = False  # AdamW needs dense gradients
        return model

    def save(self, model, tokenizer, out: Path) -> None:
        for memory in memory_layers(model).values():
            memory.sparse_grad = True
        save_retrofitted(model, tokenizer, out, overwrite=True)
