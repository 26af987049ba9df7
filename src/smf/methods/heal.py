"""Healing: train every memory parameter (queries, keys, values, gates) on general text.

The base model stays frozen. Needed for `replacement` mode, where the memory must
learn to stand in for the FFN it replaced; optional for `additive` mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from smf.config import Config, at, setting
from smf.data.sources import _is_file, _split, check_source, for_seed, general_texts
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
    """The heal stage: dense training of the memory on general text (`smf heal`, a study's `heal`).

    As the published study heals: data {name: oasst1, lang: en, role: assistant, rank: [0, 1], min_chars: 50,
    sample: 50000, seed: run}, pack: false, max_length 1024, epochs 2, lr 5e-4, batch_size 16, grad_accum 8,
    schedule cosine, warmup_steps 100, schedule_as transformers, max_grad_norm 1.0.
    """

    data: Any = setting("pydoc", "general text: pydoc, wikitext, oasst1, or a .txt/.jsonl file")
    steps: int = setting(200, "optimizer steps (unless epochs is set)")
    epochs: float | None = setting(None, "passes over the heal data; when set, it decides the number of steps (steps is then ignored)")
    lr: float | None = setting(None, f"peak learning rate; none = {HealMethod.default_lr}")
    batch_size: int = setting(8, "sequences per step")
    grad_accum: int = setting(1, "micro-batches per step (batch_size must be a multiple)")
    max_length: int = setting(256, "tokens per sequence")
    pack: bool = setting(True, "join the documents with EOS and cut them into max_length sequences; false: each document "
                               "(message) its own sequence from its first token, cut at max_length, those of one token left "
                               "out (the published study)")
    warmup_steps: int = setting(0, "linear warm-up steps")
    schedule: Literal["constant", "linear", "cosine"] = setting("constant", "learning-rate schedule after warm-up")
    schedule_as: Literal["smf", "transformers"] = setting("smf", "how warm-up and epochs count (see smf train's schedule_as; "
                                                                 "transformers: as the published study heals)")
    max_grad_norm: float | None = setting(1.0, "gradient clipping norm; none = no clipping")
    seed: int = setting(0, "seed of the data order")

    def check(self, where: str) -> None:
        self.train_config(where)
        check_source(self.data, "text", at(where, "data"))
        if self.epochs is None:
            self.check_warmup(self.steps, where, f"steps: {self.steps}")
        elif (n := self._local_sequences()) is not None:
            self.check_warmup(self.train_config(where).epoch_steps(n), where,
                              f"{self.epochs:g} epochs of {n} sequences in batches of {self.batch_size}")

    def check_warmup(self, steps: int, where: str, why: str) -> None:
        """Refuse a warm-up longer than the heal (its peak learning rate would never be reached)."""
        if self.warmup_steps > steps:
            raise SmfError(f"{at(where, 'warmup_steps')}: a warm-up of {self.warmup_steps} steps is longer than the heal's "
                           f"{steps} steps ({why}); give fewer warmup_steps, or more steps or epochs")

    def _local_sequences(self) -> int | None:
        """The heal's number of unpacked sequences where its data is a local file (None otherwise: the hub's is
        counted when the heal starts); a 1-token message, which the heal leaves out, still counts here."""
        name, options = _split(self.data, "heal.data")
        if self.pack or not (_is_file(name) or options.get("source") is not None):
            return None
        return len(general_texts(for_seed(self.data, self.seed), "heal data"))

    def train_config(self, where: str = "heal") -> TrainConfig:
        return TrainConfig.from_dict({"method": "heal", "steps": self.steps, "epochs": self.epochs, "lr": self.lr,
                                      "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                                      "max_length": self.max_length, "warmup_steps": self.warmup_steps,
                                      "schedule": self.schedule, "schedule_as": self.schedule_as,
                                      "max_grad_norm": self.max_grad_norm, "seed": self.seed}, where)

