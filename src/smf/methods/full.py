"""Full finetuning: every weight trains, AdamW."""

from __future__ import annotations

from smf.memory.retrofit import memory_layers
from smf.methods.base import Method


class FullMethod(Method):
    name = "full"
    about = "every weight, AdamW"
    default_lr = 5e-5
    color = "#d62728"

    def prepare(self, model, model_dir):
        for p in model.parameters():
            p.requires_grad_(True)
        for memory in memory_layers(model).values():
            memory.sparse_grad = False  # AdamW needs dense gradients
        return model
