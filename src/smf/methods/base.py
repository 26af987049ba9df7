"""What a training method is, the settings every method shares, and the registry of methods.

A method (`Method`) says which parameters train, with which optimizer, and how the
result is saved; its own options are a config dataclass (`Method.Options`). The
settings every method shares (steps, batch, learning rate, schedule, ...) are
`TrainConfig`; a TrainConfig holds the chosen method's options in `options`.

As a mapping (YAML, a study's method entry, `train_config.json`) a TrainConfig is
flat: shared keys and the method's option keys side by side,

    {method: smf, steps: 40, lr: 1.0, rule: tfidf, top_t: 300}

`register_method` adds a method; the CLI flags, the validation, a study's method
families and the report's grouping all read `METHODS`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from smf.config import Config, at, check_choices, check_keys, choice, coerce, field_names, field_types, setting
from smf.distributed import Comm
from smf.errors import SmfError
from smf.io import atomic_dir
from smf.memory.retrofit import memory_layers, save_retrofitted
from smf.models import PRECISIONS, load_model



@dataclass
class NoOptions(Config):
    """A method without options of its own."""


@dataclass(frozen=True)
class Family:
    """A study's name for a method with some options fixed: 'smf-tfidf' is smf with rule tfidf."""

    label: str
    method: str
    settings: dict[str, Any]
    color: str
    compared_as: str  # "smf" or "baseline": how the report's aims treat it


class Method:
    """A training method: which parameters train, with which optimizer, and how to save.

    The trainer calls, in order: `prepare` once; then per optimizer step, for each
    micro-batch `after_forward`, and `before_step` just before `optimizer.step()`.
    Subclasses set `name`, `about`, `Options` and override what differs.
    """

    name: ClassVar[str] = "?"
    about: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    default_lr: ClassVar[float] = 1e-4
    #: whether the optimizer clips gradients itself (sparse optimizers do)
    clips_itself: ClassVar[bool] = False
    #: whether the method trains a retrofitted model (a study hands it the memory model)
    needs_memory: ClassVar[bool] = False
    #: "smf" or "baseline" in a study's report; None keeps the method out of studies
    compared_as: ClassVar[str | None] = "baseline"
    color: ClassVar[str] = "k"
    #: whether `save` writes something small over the folder training started from (a delta, an
    #: adapter): a stream keeps every chunk's saved model then, else only the latest
    saves_compactly: ClassVar[bool] = False

    def __init__(self, config: "TrainConfig"):
        self.config = config
        self.options = config.options
        #: background statistics to rank against instead of the model folder's (a stream's accumulated ones)
        self.background = None
        #: the processes training together (the trainer sets it before `prepare`)
        self.comm = Comm()

    @classmethod
    def families(cls) -> list[Family]:
        """The labels a study may use for this method (default: its name)."""
        return [Family(cls.name, cls.name, {}, cls.color, cls.compared_as)] if cls.compared_as else []

    @classmethod
    def uses_memory(cls, config: "TrainConfig") -> bool:
        """Whether a run with `config` trains a retrofitted model (a method that wraps another asks that one)."""
        return cls.needs_memory

    @property
    def lr(self) -> float:
        return self.config.lr if self.config.lr is not None else self.default_lr

    def prepare(self, model: nn.Module, model_dir: Path | None) -> nn.Module:
        """Freeze/wrap the model for training; return the model to train."""
        raise NotImplementedError

    def trainable(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.AdamW([p for _, p in self.trainable(model)], lr=self.lr, betas=tuple(c.betas), weight_decay=c.weight_decay)

    def terms(self, model: nn.Module, tokenizer, data: list) -> list:
        """Terms of the loss the method adds at every step (smf.train.loop.Term), built once after `prepare`, before a
        checkpoint loads, with the training data (`data`, smf.data.batching.Encoded, each prompt marked)."""
        return []

    def before_forward(self, model: nn.Module, batch: dict) -> None:
        """Called before each micro-batch's forward pass (input_ids, attention_mask, labels)."""

    def after_forward(self, model: nn.Module) -> None:
        """Called after each micro-batch's forward pass."""

    def before_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once per optimizer step, after all backward passes, before the step.

        By default every trainable gradient is summed over the processes training together
        (`self.comm`), packed in one flat buffer per dtype.
        """
        comm = self.comm
        if not comm.distributed:  # nothing to sum; count what would be sent
            comm.note(sum(p.numel() * p.element_size() for _, p in self.trainable(model) if p.grad is not None))
            return
        for _, p in self.trainable(model):
            if p.grad is None:  # every process must send the same buffer
                p.grad = torch.zeros_like(p)
            elif p.grad.is_sparse:
                p.grad = p.grad.to_dense()
        comm.sum_flat_([p.grad for _, p in self.trainable(model)])

    def step_stats(self, optimizer: torch.optim.Optimizer) -> dict:
        """Numbers for the step log (e.g. rows selected)."""
        return {}

    def summary_stats(self, model: nn.Module) -> dict:
        """Extra numbers for the run's summary (e.g. the rows SMF actually trained)."""
        return {}

    def optimizer_state_bytes(self, optimizer: torch.optim.Optimizer) -> int:
        return sum(t.numel() * t.element_size() for st in optimizer.state.values() for t in st.values() if torch.is_tensor(t))

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The weights a checkpoint must hold to restore training."""
        return {n: p.detach() for n, p in self.trainable(model)}

    def load_trainable_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.trainable(model))
        assert set(params) == set(state), "checkpoint does not match the method's trainable parameters"
        with torch.no_grad():
            for name, tensor in state.items():
                params[name].copy_(tensor)

    def extra_state(self) -> dict:
        """Anything besides weights, optimizer and global RNG that resuming needs."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def save(self, model: nn.Module, tokenizer, out: Path, standalone: bool = False) -> None:
        """Write the trained model to the folder `out` (atomically): a retrofitted model
        with its memory, else a plain transformers folder. A method may write something
        compact that loads onto the model it started from (an adapter, a delta), unless
        `standalone` asks for a folder that loads by itself."""
        if memory_layers(model):
            save_retrofitted(model, tokenizer, out, overwrite=True)
            return
        with atomic_dir(out, overwrite=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)

    def export(self, model: nn.Module) -> nn.Module:
        """The plain model to evaluate after training (e.g. LoRA merged)."""
        return model

    @classmethod
    def continue_from(cls, saved: list[Path], start: Path, *, merge: bool) -> tuple[nn.Module, Any, Path]:
        """(model, tokenizer, model_dir) to train on from, in a stream: `saved` holds the folders this
        method saved after each earlier chunk, in order; `start` is the folder the first chunk
        started from; `merge` asks to fold earlier training into the weights before training anew
        where the method keeps it apart (LoRA's adapters). By default: the latest saved folder."""
        return (*load_model(saved[-1]), saved[-1])


# ---------------------------------------------------------------- the registry

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Add a method (usable as a class decorator). Its option names must not shadow
    a shared TrainConfig setting, nor another method's option of a different type."""
    shared = set(TrainConfig.shared_names())
    clash = shared & set(field_names(cls.Options))
    assert not clash, f"method {cls.name}: options {sorted(clash)} shadow shared training settings"
    for other in METHODS.values():
        theirs = {g.name: g.type for g in dataclasses.fields(other.Options)}
        for f in dataclasses.fields(cls.Options):
            assert f.name not in theirs or theirs[f.name] == f.type, f"option {f.name} of {cls.name} and {other.name} differ in type"
    METHODS[cls.name] = cls
    return cls


def method_class(name: str, where: str = "training config") -> type[Method]:
    choice(name, METHODS, "method", where)
    return METHODS[name]


def families() -> dict[str, Family]:
    """Every label a study's `methods` may start with, in registry order."""
    return {f.label: f for cls in METHODS.values() for f in cls.families()}


def option_owners() -> dict[str, list[str]]:
    """Option name → the methods that have it (a method that wraps others, smf.methods.wrap, owns only its own)."""
    owners: dict[str, list[str]] = {}
    for cls in METHODS.values():
        for name in getattr(cls.Options, "OWN", None) or field_names(cls.Options):
            owners.setdefault(name, []).append(cls.name)
    return owners


# ---------------------------------------------------------------- shared settings


@dataclass
class TrainConfig(Config):
    """Everything that decides a training run. Same config + same seed → same weights."""

    method: str = setting("smf", "training method (smf, lora, full, heal, replay, kl-anchor, or a registered one)")
    lr: float | None = setting(None, "peak learning rate; none = the method's default (smf: 1.0 adam / 2.0 sgd; lora 2e-4; full 5e-5; heal 1e-3)")
    weight_decay: float = setting(0.0, "weight decay (AdamW; lazy Adam decays selected rows only)")
    betas: tuple[float, float] = setting((0.9, 0.999), "Adam betas")
    steps: int = setting(100, "optimizer steps")
    epochs: float | None = setting(None, "passes over the training data; when set, it decides the number of steps (steps is then ignored)")
    loss: Literal["target", "text"] = setting("target", "tokens that carry the loss: target (the answer, smf's default) or text (the whole example, "
                                  "as the published study trains)")
    batch_size: int = setting(8, "examples per optimizer step")
    grad_accum: int = setting(1, "micro-batches per step (batch_size must be a multiple)")
    max_length: int = setting(256, "tokens per example; longer prompts lose their start, never the target")
    warmup_steps: int = setting(0, "linear warm-up steps")
    schedule: Literal["constant", "linear", "cosine"] = setting("constant", "learning-rate schedule after warm-up")
    schedule_as: Literal["smf", "transformers"] = setting(
        "smf", "how warm-up and epochs count: smf (update k of the warm-up takes lr·k/(warmup_steps+1); epochs give "
               "ceil(epochs·examples/batch_size) steps, a step may span two epochs) or transformers (its Trainer, as the "
               "published study trains: update k takes lr·(k-1)/warmup_steps, the first lr 0; epochs give "
               "ceil(epochs·ceil(examples/batch_size)) steps, each within one epoch, an epoch's last one the rest)")
    micro_batch_loss: Literal["step_mean", "own_mean"] = setting(
        "step_mean", "step_mean: every target token of a step weighs 1 / (the step's target tokens), whatever grad_accum; "
                     "own_mean: each micro-batch's mean loss, summed over the step's micro-batches (the published study's SMF "
                     "stage: about grad_accum times the gradient before clipping)")
    max_grad_norm: float | None = setting(1.0, "gradient clipping norm; none = no clipping")
    seed: int = setting(0, "seed of the data order, adapters and random selection")
    checkpoint_every: int = setting(0, "steps between checkpoints for --resume (0 = none)")
    mixed_precision: str = setting("auto", "auto (bf16 autocast on a GPU), no, or bf16")
    gradient_checkpointing: bool = setting(False, "keep only each decoder layer's input for the backward pass and recompute "
                                                  "the rest there: less memory for activations, about a third more compute per step")
    options: Any = None  # the method's Options; None = its defaults

    RENAMED: ClassVar[dict[str, str]] = {"selection": "rule", "lora_r": "rank", "lora_alpha": "alpha",
                                         "lora_dropout": "dropout", "lora_targets": "targets"}
    REMOVED: ClassVar[dict[str, str]] = {
        "eval_every": "evaluation points during training are a study's curve.every",
        "options": "write the method's options beside the shared settings, e.g. rule: tfidf",
    }

    checked: InitVar[bool] = True

    def __post_init__(self, checked: bool) -> None:
        self.betas = tuple(self.betas)
        if self.options is None and self.method in METHODS:
            self.options = METHODS[self.method].Options()
        if checked:
            self.check()

    @classmethod
    def shared_names(cls) -> list[str]:
        return [n for n in field_names(cls) if n != "options"]

    @classmethod
    def from_dict(cls, raw, where: str = "training config") -> "TrainConfig":
        """A TrainConfig from a flat mapping of shared settings and the method's options."""
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise SmfError(f"{where}: expected a mapping of training settings, got {raw!r}")
        method = raw.get("method", "smf")
        if not isinstance(method, str):
            raise SmfError(f"{where}: method must be a name, got {method!r}")
        options_cls = method_class(method, where).Options
        shared = cls.shared_names()
        own = field_names(options_cls)
        owners = option_owners()
        for key in raw:
            if key in cls.REMOVED:
                raise SmfError(f"{where}: '{key}' is not a training setting: {cls.REMOVED[key]}")
            if key not in shared and key not in own and key in owners:
                raise SmfError(f"{where}: '{key}' is an option of {', '.join(owners[key])}, not of {method}")
        check_keys(cls, raw, where, known=shared + own)
        options = options_cls.from_dict({k: v for k, v in raw.items() if k in own}, where)
        hints = field_types(cls)
        values = {k: coerce(v, hints[k], at(where, k)) for k, v in raw.items() if k in shared}
        config = cls(**values, options=options, checked=False)  # checked below, with `where`
        config.check(where)
        return config

    def check(self, where: str = "training config") -> None:
        choice(self.method, METHODS, "method", where)
        for name in ("steps", "batch_size", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                raise SmfError(f"{where}: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise SmfError(f"{where}: {name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:  # the range torch and numpy seed from
            raise SmfError(f"{where}: seed must be between 0 and 2**32 - 1, got {self.seed}")
        if self.batch_size % self.grad_accum:
            raise SmfError(f"{where}: batch_size {self.batch_size} is not a multiple of grad_accum {self.grad_accum}")
        if self.lr is not None and not self.lr > 0:
            raise SmfError(f"{where}: learning rate must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            raise SmfError(f"{where}: weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise SmfError(f"{where}: betas must be two numbers in [0, 1) (Adam's decay rates), got {', '.join(map(str, self.betas))}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise SmfError(f"{where}: max_grad_norm must be > 0 (or none), got {self.max_grad_norm}")
        check_choices(self, where)
        if self.epochs is not None and not self.epochs > 0:
            raise SmfError(f"{where}: epochs must be > 0 (or none), got {self.epochs}")
        choice(self.mixed_precision, PRECISIONS, "mixed precision", where)
        expected = METHODS[self.method].Options
        if not isinstance(self.options, expected):
            raise SmfError(f"{where}: options of method {self.method} must be {expected.__name__}, got {type(self.options).__name__}")
        self.options.check(where)

    def epoch_steps(self, n: int) -> int:
        """The optimizer steps of `epochs` passes over `n` examples: ceil(epochs·n/batch_size) (schedule_as smf), or
        as transformers' Trainer counts them, whole steps per epoch (a last partial one included) times the epochs,
        rounded up (schedule_as transformers)."""
        if self.schedule_as == "transformers":
            return max(1, math.ceil(self.epochs * math.ceil(n / self.batch_size)))
        return max(1, math.ceil(self.epochs * n / self.batch_size))

    def to_dict(self) -> dict[str, Any]:
        d = {n: getattr(self, n) for n in self.shared_names()}
        d["betas"] = list(self.betas)
        return {**d, **self.options.to_dict()}
