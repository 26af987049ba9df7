"""A method that trains as another method does, with a term of its own in the loss: the shape of the
baselines a practitioner reaches for against forgetting (smf.methods.replay, smf.methods.kl_anchor).

The option `of` names the method it wraps (`of: lora`); everything that method decides (its trainable
parameters, optimizer, saving, its options such as LoRA's rank) is the wrapped method's, and the
wrapper adds one `Term` (smf.train.loop) per step on general text. Its options are its own beside
those of every method it may wrap (`wrapping_options`); setting an option of a method it does not
wrap this time is refused.

The general text is cut into windows of the run's max_length tokens, the windows drawn in a
seeded order and taken in turn (smf.methods.terms), so a resumed run sees the same windows at the same steps.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal  # noqa: F401  (Literal: the wrapped options' annotations resolve here)

from smf.config import Config, at, choice, setting
from smf.data.sources import check_source
from smf.errors import SmfError
from smf.methods.base import METHODS, Family, Method, TrainConfig
from smf.methods.terms import InTurn, general_windows


def wrapping_options(name: str, own: type, *wrapped: type) -> type:
    """A Config dataclass with `own`'s fields and every field of the `wrapped` methods' options classes, each
    with its default and help (the same types, so the registry's type check holds)."""
    fields, seen = [], set()
    for cls in (own, *wrapped):
        for f in dataclasses.fields(cls):
            if f.name not in seen:
                seen.add(f.name)
                default = {"default": f.default} if f.default is not dataclasses.MISSING else {"default_factory": f.default_factory}
                fields.append((f.name, f.type, dataclasses.field(**default, metadata=f.metadata)))
    made = dataclasses.make_dataclass(name, fields, bases=(own,))
    made.__module__ = __name__  # the annotations (strings) resolve in this module
    made.__doc__ = own.__doc__
    made.OWN = tuple(f.name for f in dataclasses.fields(own))
    return made


@dataclasses.dataclass
class WrapOptions(Config):
    """The method wrapped and the general text its term reads."""

    #: the registered name of the method these options are for (its `check_wrapped` checks them)
    method: ClassVar[str] = "?"

    of: str = setting("lora", "the method trained beside the term; that method's options apply as they do to it")
    general: str = setting("docstrings", "general text for the term (a dataset with a text form, or a .txt/.jsonl file); in a "
                                         "study it must not be a probe's source")


    def check(self, where: str) -> None:
        check_source(self.general, "text", at(where, "general"))  # before any model work: a name, or a file that exists
        METHODS[self.method].check_wrapped(self, where)

    def to_dict(self) -> dict:
        """Its own options and the wrapped method's (not those of the methods it could wrap)."""
        keep = {*getattr(self, "OWN", ()), *(f.name for f in dataclasses.fields(METHODS[self.of].Options))}
        return {k: v for k, v in super().to_dict().items() if k in keep}


class Wrapping(Method):
    """Trains as the method `options.of` does, and adds the terms its `terms` returns to each step's loss."""

    #: the methods this one may wrap
    wraps: ClassVar[tuple[str, ...]] = ()
    #: each family's label prefix ("replay" → replay-full, replay-lora)
    family_prefix: ClassVar[str] = ""
    family_colors: ClassVar[dict[str, str]] = {}

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        inner_cls = METHODS[self.options.of]
        values = {f.name: getattr(self.options, f.name) for f in dataclasses.fields(inner_cls.Options)}
        self.inner = inner_cls(dataclasses.replace(config, method=self.options.of, options=inner_cls.Options(**values)))

    @classmethod
    def families(cls) -> list[Family]:
        return [Family(f"{cls.family_prefix}-{m}", cls.name, {"of": m}, cls.family_colors.get(m, cls.color), METHODS[m].compared_as)
                for m in cls.wraps if m in METHODS]

    @classmethod
    def uses_memory(cls, config: TrainConfig) -> bool:
        return METHODS[config.options.of].needs_memory

    @classmethod
    def check_wrapped(cls, options, where: str) -> None:
        """`of` is one of `wraps`, the wrapped method's options pass its check, and no option of another method it
        may wrap differs from its default."""
        choice(options.of, cls.wraps, f"method wrapped by {cls.name}", where)
        inner = METHODS[options.of].Options
        theirs = {f.name for f in dataclasses.fields(inner)}
        defaults = type(options)()
        for m in cls.wraps:
            for f in dataclasses.fields(METHODS[m].Options):
                if f.name not in theirs and getattr(options, f.name) != getattr(defaults, f.name):
                    raise SmfError(f"{where}: '{f.name}' is an option of {m}; {cls.name} of {options.of} does not take it")
        inner(**{name: getattr(options, name) for name in theirs}).check(where)

    # ------------------------------------------------ what the wrapped method decides

    @property
    def default_lr(self) -> float:  # type: ignore[override]
        return self.inner.default_lr

    @property
    def clips_itself(self) -> bool:  # type: ignore[override]
        return self.inner.clips_itself

    def prepare(self, model, model_dir):
        self.inner.background, self.inner.comm = self.background, self.comm
        return self.inner.prepare(model, model_dir)

    def trainable(self, model):
        return self.inner.trainable(model)

    def make_optimizer(self, model):
        return self.inner.make_optimizer(model)

    def before_forward(self, model, batch):
        self.inner.before_forward(model, batch)

    def after_forward(self, model):
        self.inner.after_forward(model)

    def before_step(self, model, optimizer):
        self.inner.before_step(model, optimizer)

    def step_stats(self, optimizer):
        return self.inner.step_stats(optimizer)

    def summary_stats(self, model):
        return self.inner.summary_stats(model)

    def optimizer_state_bytes(self, optimizer):
        return self.inner.optimizer_state_bytes(optimizer)

    def trainable_state(self, model):
        return self.inner.trainable_state(model)

    def load_trainable_state(self, model, state):
        self.inner.load_trainable_state(model, state)

    def extra_state(self):
        return self.inner.extra_state()

    def load_extra_state(self, state):
        self.inner.load_extra_state(state)

    @property
    def saves_compactly(self) -> bool:  # type: ignore[override]
        return self.inner.saves_compactly

    def continue_from(self, saved, start, *, merge):  # type: ignore[override]  (on an instance: the wrapped method's)
        return self.inner.continue_from(saved, start, merge=merge)

    def save(self, model, tokenizer, out, standalone=False):
        self.inner.save(model, tokenizer, out, standalone)

    def export(self, model):
        return self.inner.export(model)

    def windows(self, tokenizer, per_step: int) -> InTurn:
        """The general text's windows for this run's steps, `per_step` a step."""
        c = self.config
        found = general_windows(self.options.general, tokenizer, c.max_length, c.steps * per_step, c.seed, f"{self.name}: general")
        return InTurn(found, per_step, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)


__all__ = ["WrapOptions", "Wrapping", "wrapping_options"]
