"""Training methods: what is trainable and how it steps. One trainer runs them all.

- `smf`:  memory value rows only, top-t per layer by a selection rule, strictly sparse optimizer
- `lora`: PEFT LoRA adapters (all linear layers by default), AdamW
- `full`: every weight, AdamW
- `heal`: every memory parameter (queries, keys, values, gates), base frozen, AdamW

A new method is one module with a `Method` subclass and one `register_method` line
(here, or in the user's own code before smf runs).
"""

from __future__ import annotations

from smf.methods.base import METHODS, Family, Method, NoOptions, TrainConfig, families, method_class, register_method
from smf.methods.full import FullMethod
from smf.methods.heal import HealMethod
from smf.methods.lora import LoraMethod
from smf.methods.smf import SmfMethod

for _cls in (SmfMethod, LoraMethod, FullMethod, HealMethod):
    register_method(_cls)


def make_method(config: TrainConfig) -> Method:
    """The Method that `config.method` names, set up with `config`."""
    return method_class(config.method)(config)


__all__ = ["METHODS", "Family", "Method", "NoOptions", "TrainConfig", "families", "make_method", "method_class", "register_method"]
