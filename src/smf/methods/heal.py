"""Healing: train every memory parameter (queries, keys, values, gates) on general text.

The base model stays frozen. Needed for `replacement` mode, where the memory must
learn to stand in for the FFN it replaced; optional for `additive` mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smf.config import Config, at, setting
from smf.data.sources import check_source
from smf.errors import SmfError
from smf.memory.retrofit import memory_layers, save_retrofitted
from smf.methods.base import Method, TrainConfig


class HealMethod(Method):
    name = "heal"
    about = "every memory parameter, base frozen, AdamW (before smf background)"
    default_lr = 1e-3
    compared_as = None  # a stage of the memory model, not a method to compare

    def prepare(self, model, model_dir):
        memories = memory_layers(model)
        if not memories:
            raise SmfError("heal needs a model with memory layers; run smf retrofit first")
        model.requires_grad_(False)
        for memory in memories.values():
            memory.requires_grad_(True)
            memory.sparse_grad = False  # AdamW needs dense gradients
        return model

    def save(self, model, tokenizer, out: Path, standalone: bool = False) -> None:
        for memory in memory_layers(model).values():
            memory.sparse_grad = True
        save_retrofitted(model, tokenizer, out, overwrite=True)


@dataclass
class HealConfig(Config):
    """The heal stage: dense training of the memory on general text (`smf heal`, a study's `heal`)."""

    data: Any = setting("pydoc", "general text: pydoc, wikitext, or a .txt/.jsonl file")
    steps: int = setting(200, "optimizer steps")
    lr: float | None = setting(None, f"learning rate; none = {HealMethod.default_lr}")
    batch_size: int = setting(8, "sequences per step")
    grad_accum: int = setting(1, "micro-batches per step (batch_size must be a multiple)")
    max_length: int = setting(256, "tokens per sequence")
    seed: int = setting(0, "seed of the data order")

    def check(self, where: str) -> None:
        self.train_config(where)
        check_source(self.data, "text", at(where, "data"))

    def train_config(self, where: str = "heal") -> TrainConfig:
        return TrainConfig.from_dict({"method": "heal", "steps": self.steps, "lr": self.lr, "batch_size": self.batch_size,
                                      "grad_accum": self.grad_accum, "max_length": self.max_length, "seed": self.seed}, where)
