"""Training methods: what is trainable and how it steps. One trainer runs them all.

- `smf`:  memory value rows only, top-t per layer by a selection rule, strictly sparse optimizer
- `lora`: PEFT LoRA adapters (all linear layers by default), AdamW
- `full`: every weight, AdamW
- `heal`: every memory parameter (queries, keys, values, gates), base frozen, AdamW
"""

from __future__ import annotations

from smf.errors import SmfError
from smf.methods.base import Method

METHOD_NAMES = ("smf", "lora", "full", "heal")


def make_method(config) -> Method:
    """The Method for `config.method` (a TrainConfig)."""
    if config.method == "smf":
        from smf.methods.smf import SmfMethod as cls
    elif config.method == "lora":
        from smf.methods.lora import LoraMethod as cls
    elif config.method == "full":
        from smf.methods.full import FullMethod as cls
    elif config.method == "heal":
        from smf.methods.heal import HealMethod as cls
    else:
        raise SmfError(f"unknown method '{config.method}'; choose one of {', '.join(METHOD_NAMES)}")
    return cls(config)


__all__ = ["METHOD_NAMES", "Method", "make_method"]
