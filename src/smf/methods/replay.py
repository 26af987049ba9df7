"""Replay: a method's training with general text mixed back in, the first thing a practitioner tries
against forgetting.

`replay` of smf, lora or full trains as that method does, and each step adds the language-model loss
of ⌈ratio · batch_size⌉ windows of general text (`general`, max_length tokens each), weighted by
`ratio` against the step's own examples:

    loss = (the examples' mean target-token loss) + ratio · (the general windows' mean token loss)

So at ratio 0.5 a step of 16 examples reads 8 windows of general text, and their mean loss weighs half
the examples'. The general windows are run after the step's reads are counted (smf.train.loop.Term):
with SMF they choose no rows, and their gradient reaches only the rows the examples chose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F

from smf.config import setting
from smf.errors import SmfError
from smf.methods.full import FullOptions
from smf.methods.lora import LoraOptions
from smf.methods.smf import SmfOptions
from smf.methods.terms import InTurn, next_token_targets, target_logprobs
from smf.methods.wrap import WrapOptions, Wrapping, wrapping_options


@dataclass
class ReplayOwnOptions(WrapOptions):
    """The method trained, the general text mixed in and how much of it."""

    method = "replay"

    ratio: float = setting(0.5, "general-text windows per training example in a step, and the weight of their mean "
                                "token loss against the examples' mean")

    def check(self, where: str) -> None:
        if not 0 < self.ratio <= 4:
            raise SmfError(f"{where}: ratio must be in (0, 4] (general-text windows per training example), got {self.ratio}")
        super().check(where)


class ReplayTerm:
    """ratio × the mean next-token loss over the step's general windows."""

    name = "replay_loss"

    def __init__(self, windows: InTurn, ratio: float):
        self.windows, self.ratio = windows, ratio

    def backward(self, model, step, *, device, autocast, backward) -> float:
        batch = self.windows.batch(step, device)
        with autocast:
            logp = target_logprobs(model, batch)
        loss = F.nll_loss(logp, next_token_targets(batch))
        backward(loss * self.ratio)
        return float(loss.detach())


class ReplayMethod(Wrapping):
    name = "replay"
    about = "a method (of: smf, lora, full) with general text mixed into each step"
    wraps = ("smf", "lora", "full")
    family_prefix = "replay"
    family_colors = {"smf": "#17becf", "lora": "#bcbd22", "full": "#8c564b"}
    Options = wrapping_options("ReplayOptions", ReplayOwnOptions, SmfOptions, LoraOptions, FullOptions)

    def terms(self, model, tokenizer, data):
        per_step = math.ceil(self.options.ratio * self.config.batch_size)
        return [*self.inner.terms(model, tokenizer, data), ReplayTerm(self.windows(tokenizer, per_step), self.options.ratio)]
