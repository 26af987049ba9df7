"""Training methods: what is trainable and how it steps. One trainer runs them all.

- `smf`:  memory value rows only, top-t per layer by a selection rule, strictly sparse optimizer
- `lora`: PEFT LoRA adapters (all linear layers by default), AdamW
- `full`: every weight, AdamW
- `heal`: every memory parameter (queries, keys, values, gates), base frozen, AdamW
- `replay`: smf, lora or full with general text mixed into each step (families replay-smf, replay-lora, replay-full)
- `kl-anchor`: lora or full with a KL term to the base model's outputs on general text (kl-lora, kl-full)

A new method is one module with a `Method` subclass and one `register_method` line
(here, or in the user's own code before smf runs).
"""

from __future__ import annotations

from smf.methods.base import METHODS, Family, Method, NoOptions, TrainConfig, families, method_class, register_method
from smf.methods.full import FullMethod
from smf.methods.heal import HealMethod
from smf.methods.kl_anchor import KlAnchorMethod
from smf.methods.lora import LoraMethod
from smf.methods.replay import ReplayMethod
from smf.methods.smf import SmfMethod

for _cls in (SmfMethod, LoraMethod, FullMethod, HealMethod):
    register_method(_cls)
for _cls in (ReplayMethod, KlAnchorMethod):  # after the methods they wrap
    register_method(_cls)


def make_method(config: TrainConfig) -> Method:
    """The Method that `config.method` names, set up with `config`."""
    return method_class(config.method)(config)


__all__ = ["METHODS", "Family", "Method", "NoOptions", "TrainConfig", "families", "make_method", "method_class", "register_method"]
