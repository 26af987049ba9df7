"""Full finetuning: every weight trains, AdamW."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from smf.config import Config, setting
from smf.memory.retrofit import memory_layers
from smf.methods.base import Method


@dataclass
class FullOptions(Config):
    """In which precision the weights and AdamW's state are kept."""

    weights: Literal["fp32", "bf16"] = setting(
        "fp32", "fp32: the weights (and AdamW's moments) as loaded, fp32 master weights; bf16: the model cast to bf16, so "
                "its weights, gradients and AdamW's moments are bf16 (the published study's full finetuning: an update "
                "smaller than a weight's bf16 spacing rounds away)")


class FullMethod(Method):
    name = "full"
    about = "every weight, AdamW"
    Options = FullOptions
    default_lr = 5e-5
    color = "#d62728"

    def prepare(self, model, model_dir):
        if self.options.weights == "bf16":
            model.to(torch.bfloat16)
        for p in model.parameters():
            p.requires_grad_(True)
        for memory in memory_layers(model).values():
            memory.sparse_grad = False  # AdamW needs dense gradients
        return model
