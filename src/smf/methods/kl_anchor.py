"""KL-anchored finetuning: LoRA or full finetuning with a penalty that keeps the model's outputs on
general text near the base model's, the regularised baseline a practitioner reaches for; and SMF with
the same penalty (`smf learn`'s kept answers, on general text), so a study can weigh it for SMF too.

`kl-anchor` of lora, full or smf trains as that method does, and each step adds

    kl_weight · mean over the tokens of kl_windows general-text windows of KL(base ‖ model)

where base is the model training started from: for LoRA the same model with its adapters switched off,
for SMF the same model with its memory reading zeros (smf.memory.memory_reading_zeros: the pretrained
model), for full finetuning a frozen copy taken before the first step (the weights' memory twice). The
windows come from `general` (max_length tokens each), in a seeded order, in turn. With SMF the windows
run after the step's reads are counted: they choose no rows, and the term moves only the chosen rows.

EWC (a quadratic penalty on each weight's move, weighted by its Fisher information) would fit the same
shape, as a term over the trainable weights; it is left out: its Fisher estimate needs one more pass over
general text and a float per trained weight, and KL on outputs is the penalty the forgetting probes measure.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from smf.config import setting
from smf.errors import SmfError
from smf.memory.retrofit import memory_reading_zeros
from smf.methods.full import FullOptions
from smf.methods.lora import LoraOptions
from smf.methods.smf import SmfOptions
from smf.methods.terms import BaseKl
from smf.methods.wrap import WrapOptions, Wrapping, wrapping_options


@dataclass
class KlAnchorOwnOptions(WrapOptions):
    """The method trained, the general text and the weight of the KL term."""

    method = "kl-anchor"

    kl_weight: float = setting(1.0, "weight of the mean KL(base ‖ model) on general text in the loss")
    kl_windows: int = setting(8, "general-text windows in each step's KL term")

    def check(self, where: str) -> None:
        if not self.kl_weight > 0:
            raise SmfError(f"{where}: kl_weight must be > 0, got {self.kl_weight}")
        if self.kl_windows < 1:
            raise SmfError(f"{where}: kl_windows must be >= 1, got {self.kl_windows}")
        super().check(where)


class KlAnchorMethod(Wrapping):
    name = "kl-anchor"
    about = "a method (of: lora, full, smf) with a KL term to the base model's outputs on general text"
    wraps = ("lora", "full", "smf")
    family_prefix = "kl-anchor"
    family_colors = {"lora": "#e377c2", "full": "#9467bd", "smf": "#2ca02c"}
    Options = wrapping_options("KlAnchorOptions", KlAnchorOwnOptions, LoraOptions, FullOptions, SmfOptions)

    def terms(self, model, tokenizer, data):
        o = self.options
        frozen = copy.deepcopy(model).requires_grad_(False).eval() if o.of == "full" else None
        as_base = memory_reading_zeros if o.of == "smf" else None
        return [*self.inner.terms(model, tokenizer, data), BaseKl(self.windows(tokenizer, o.kl_windows), o.kl_weight, frozen, as_base)]


