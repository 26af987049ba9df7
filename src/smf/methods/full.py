"""Full finetuning: every weight trains, AdamW."""

from __future__ import annotations

from pathlib import Path

from smf.io import atomic_dir
from smf.memory.retrofit import memory_layers, save_retrofitted
from smf.methods.base import Method


class FullMethod(Method):
    name = "full"
    default_lr = 5e-5

    def prepare(self, model, model_dir):
        for p in model.parameters():
            p.requires_grad_(True)
        for memory in memory_layers(model).values():
            memory.sparse_grad = False  # AdamW needs dense gradients
        return model

    def save(self, model, tokenizer, out: Path) -> None:
        if memory_layers(model):
            save_retrofitted(model, tokenizer, out, overwrite=True)
            return
        with atomic_dir(out, overwrite=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
