"""SMF in transformers' Trainer, or in any loop that steps a torch optimizer: `SmfOptimizer`.

    optimizer = SmfOptimizer(model, background, top_t=300, lr=1.0)
    Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, None)).train()

One object does around each optimizer step what `smf train --method smf` does, through the same code
(`smf.methods.smf.SmfMethod` and the strictly sparse optimizers of `smf.optim`):

- built, it freezes every weight but the memories' value tables and records which rows each training
  forward pass reads (a hook after the decoder's forward pass, counted only in train mode with gradients
  on, so evaluation passes are not counted);
- `step()`, after the last micro-batch of the step, ranks the rows the step's micro-batches read (TF-IDF
  against the background statistics, ...), sums the gradient of only the top t rows per layer (the value
  tables' gradient stays factored until then), clips those rows' gradient to `max_grad_norm` and updates
  them with the strictly sparse optimizer. Nothing else moves, bit for bit.

Gradient accumulation needs nothing more: the micro-batches' reads and gradient parts add up until
`step()`. The Trainer's own clipping (`TrainingArguments.max_grad_norm`) finds no gradient to clip (the
tables' is factored until `step()`, every other weight is frozen): the optimizer's `max_grad_norm` clips.
The Trainer's learning-rate schedule scales the optimizer's `lr` (`TrainingArguments.learning_rate` is
not read when the optimizer is given).

Checkpoints: `state_dict()` holds tensors, numbers and strings only: per memory layer the rows that have
optimizer state and their state (lazy Adam's moments and step counts, row-wise Adagrad's sums; never a
tensor of the whole table), the selection rule's random state and the rows trained so far. The Trainer
writes it with `torch.save` into `optimizer.pt` and reads it back with `torch.load(weights_only=True)`,
transformers' own call, whose loader builds only tensors and plain containers; smf itself never
unpickles.

Saving: the optimizer (and `smf.add_memory`, `smf.load`) makes the model's `save_pretrained` write smf's
model files beside the weights transformers writes (`config.json` with its `auto_map`, `modeling_smf.py`,
`layer.py`, `smf_memory.json`), so a Trainer checkpoint or `trainer.save_model(folder)` loads with
`AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` and with `smf.load(folder)`, as
`smf export`'s folders do.

One process only: with several (torchrun, accelerate launch) each would choose rows from its own batch;
`smf train` sums the reads over processes first.
"""

from __future__ import annotations

import os
import types
from typing import Any, Literal

import torch
from torch import nn

from smf.errors import SmfError
from smf.memory.retrofit import memory_layers, write_model_files
from smf.methods import TrainConfig
from smf.methods.smf import SmfMethod, SmfOptions
from smf.optim import SparseRowOptimizer
from smf.selection import RULES, BackgroundStats

SPARSE = ("adam", "sgd", "rowwise_adagrad")  # the strictly sparse optimizers (smf.methods.smf.OPTIMIZERS)
FORMAT = "smf-optimizer-1"  # what a state_dict of SmfOptimizer says it is


def _geometry(slots: dict[int, int]) -> str:
    return ", ".join(f"layer {i}: {n} rows" for i, n in sorted(slots.items()))


def check_background(model: nn.Module, background: BackgroundStats) -> None:
    """Refuse background statistics counted on another memory (other layers or slot counts) than `model`'s."""
    ours = {i: m.slots for i, m in memory_layers(model).items()}
    theirs = {i: len(df) for i, df in background.df.items()}
    if ours != theirs:
        raise SmfError(f"the background statistics were counted on another memory ({_geometry(theirs)}) than this model's "
                       f"({_geometry(ours)}); count them on this model: smf.background_statistics(model, tokenizer)")


def _save_pretrained(self: nn.Module, save_directory, *args, **kwargs):
    """transformers' save_pretrained, then smf's model files (`write_model_files`) on the process that writes."""
    out = type(self).save_pretrained(self, save_directory, *args, **kwargs)
    if kwargs.get("is_main_process", True):
        write_model_files(self, save_directory)
    return out


def install_save(model: nn.Module) -> nn.Module:
    """Make `model.save_pretrained` (what Trainer calls for checkpoints and save_model) write a folder that loads
    as a retrofitted model. A method bound to this model, so a deep copy saves itself, not the original."""
    if memory_layers(model) and not isinstance(model.__dict__.get("save_pretrained"), types.MethodType):
        model.save_pretrained = types.MethodType(_save_pretrained, model)
    return model


def _one_process() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        raise SmfError("SmfOptimizer trains in one process (each process would choose rows from its own batch); for "
                       "several processes run smf train (torchrun ... -m smf train --method smf)")


class SmfOptimizer(torch.optim.Optimizer):
    """Row selection and a strictly sparse optimizer, as one torch optimizer over a retrofitted model's
    memory value tables (see the module doc): hand it to transformers' Trainer as
    `optimizers=(SmfOptimizer(model, background), None)`, or call `step()` in your own loop after each
    step's backward passes.

    model: a causal LM with memory layers (`smf.add_memory`, `smf.load`); every other weight is frozen.
    background: `BackgroundStats` of this model's memory (`smf.background_statistics`), or a folder that
        holds them; needed by the rules tfidf (default) and kl.
    top_t: rows trained per memory layer and step (default 300). rule: tfidf, kl, tf, all or random.
    optimizer: adam (lazy Adam: moments of the rows ever selected only), sgd or rowwise_adagrad.
    lr: learning rate on the value rows (None: 1.0 for adam and rowwise_adagrad, 2.0 for sgd); betas,
        weight_decay (Adam's; decay of the selected rows only). max_grad_norm: clip the selected rows'
        gradient to this total norm (None: no clipping). count: "all" (every real token's reads rank the
        rows) or "target" (only positions whose next token carries loss: needs `labels` in the forward
        call). seed: of the random rule.
    """

    def __init__(self, model: nn.Module, background: BackgroundStats | str | os.PathLike | None = None, *, top_t: int = 300,
                 rule: str = "tfidf", optimizer: Literal["adam", "sgd", "rowwise_adagrad"] = "adam", lr: float | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0, max_grad_norm: float | None = 1.0,
                 count: Literal["all", "target"] = "all", seed: int = 0):
        where = "SmfOptimizer"
        if not isinstance(model, nn.Module):
            raise SmfError(f"{where}: model must be a torch module (a transformers causal LM), got {type(model).__name__}")
        if not memory_layers(model):
            raise SmfError(f"{where}: the model has no memory layers; add them first: model = smf.add_memory(model, "
                           "smf.MemoryConfig()), or load a retrofitted folder with smf.load")
        if optimizer not in SPARSE:
            raise SmfError(f"{where}: optimizer must be one of {', '.join(SPARSE)} (strictly sparse), got {optimizer!r}; "
                           "the published study's dense arm (adamw_masked) runs in smf train")
        _one_process()
        if isinstance(background, (str, os.PathLike)):
            background = BackgroundStats.load(background)
        if background is not None and not isinstance(background, BackgroundStats):
            raise SmfError(f"{where}: background must be BackgroundStats (smf.background_statistics) or a folder holding "
                           f"them, got {type(background).__name__}")
        if background is None and rule in RULES and RULES[rule].needs_background:
            raise SmfError(f"{where}: selection rule '{rule}' ranks rows against background statistics; count them first: "
                           "stats = smf.background_statistics(model, tokenizer), then smf.SmfOptimizer(model, stats)")
        if background is not None:
            check_background(model, background)
        config = TrainConfig(method="smf", lr=lr, betas=tuple(betas), weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                             seed=seed, options=SmfOptions(rule=rule, top_t=top_t, optimizer=optimizer, count=count), checked=False)
        config.check(where)
        self.model = model
        self._method = method = SmfMethod(config)
        method.background = background
        method.prepare(model, None)
        inner: SparseRowOptimizer = method.make_optimizer(model)  # type: ignore[assignment]
        self._inner = inner
        super().__init__([m.values for m in method.memories.values()], dict(inner.defaults))
        # One set of groups and state: what the Trainer's scheduler sets (lr) is what the inner optimizer reads.
        self.param_groups, self.state, self.defaults = inner.param_groups, inner.state, inner.defaults
        self._stepped = False
        decoder = model.get_decoder()
        self._hooks = [decoder.register_forward_hook(self._after_forward)]
        if count == "target":
            self._hooks.append(model.register_forward_pre_hook(self._before_forward, with_kwargs=True))
        install_save(model)

    # ------------------------------------------------------------ recording

    def _after_forward(self, module, args, output) -> None:
        if module.training and torch.is_grad_enabled():
            self._method.after_forward(self.model)

    def _before_forward(self, module, args, kwargs) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        labels = kwargs.get("labels")
        if labels is None:
            raise SmfError("SmfOptimizer(count='target') ranks rows by the reads of positions that predict a label; pass "
                           "labels to the model's forward call, or use count='all'")
        mask = kwargs.get("attention_mask")
        self._method.before_forward(self.model, {"labels": labels, "attention_mask": mask if mask is not None else torch.ones_like(labels)})

    # ------------------------------------------------------------ stepping

    def step(self, closure=None):
        """Select the top-t rows per layer from the reads since the last step and update them (see the class doc)."""
        if closure is not None:
            raise SmfError("SmfOptimizer.step takes no closure: it chooses rows from the forward passes already run")
        if not self._method.reads_recorded():
            raise SmfError("SmfOptimizer.step: no training forward pass since the last step; run the model in train mode "
                           "(model.train()) with gradients on, then backward, then step")
        self._method.before_step(self.model, self._inner)
        self._inner.step()
        self._stepped = True
        return None

    @property
    def last_stats(self) -> dict[str, Any]:
        """The last step's numbers: rows selected (per layer and in all), rows changed, gradient norm. Reading them
        waits for the device once; the step itself never does."""
        return self._method.step_stats(self._inner) if self._stepped else {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients and reads of micro-batches not stepped yet."""
        super().zero_grad(set_to_none=set_to_none)
        self._method.forget_step()

    def add_param_group(self, param_group: dict) -> None:
        if getattr(self, "_inner", None) is not None and self.param_groups is self._inner.param_groups:
            raise SmfError("SmfOptimizer trains the memories' value rows only; train other weights with another optimizer")
        super().add_param_group(param_group)

    def close(self) -> None:
        """Stop recording reads (for use after training: generation then reads no rows for nothing)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self._method.export(self.model)

    @property
    def rows_trained(self) -> dict[int, torch.Tensor]:
        """Per memory layer, the rows updated so far (ascending)."""
        return {i: t.nonzero().flatten() for i, t in self._method._trained.items()}

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Tensors, numbers and strings only (see the module doc), keyed as torch's optimizers are."""
        params = [p for group in self.param_groups for p in group["params"]]
        layers = list(self._method.memories)
        state = {}
        for index, p in enumerate(params):
            compact = self._inner.compact_state(p)
            if compact:
                state[index] = compact
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": list(range(len(g["params"])))} for g in self.param_groups]
        o = self._method.options
        return {
            "state": state,
            "param_groups": groups,
            "smf": {"format": FORMAT, "optimizer": o.optimizer, "rule": o.rule, "top_t": o.top_t,
                    "layers": layers, "slots": [self._method.memories[i].slots for i in layers],
                    "selector_rng": self._method.selector.generator.get_state(),
                    "trained": {index: self._method._trained[i].nonzero().flatten() for index, i in enumerate(layers)}},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from `state_dict()` of an SmfOptimizer over the same memory (a Trainer checkpoint's optimizer.pt)."""
        fix = "resume from a checkpoint an SmfOptimizer with the same optimizer wrote for this model, or start without resuming"
        method = self._method
        layers = list(method.memories)
        try:
            meta = state_dict["smf"]
            if meta["format"] != FORMAT:
                raise ValueError(f"format {meta['format']!r:.40}")
            if meta["optimizer"] != method.options.optimizer:
                raise ValueError(f"its optimizer is {meta['optimizer']!r:.40}, this one's {method.options.optimizer!r}")
            theirs = dict(zip(list(meta["layers"]), list(meta["slots"])))
            ours = {i: method.memories[i].slots for i in layers}
            if theirs != ours:
                raise ValueError(f"it is for another memory ({_geometry(theirs)}; this model: {_geometry(ours)})")
            if len(state_dict["param_groups"]) != len(self.param_groups):
                raise ValueError("another number of parameter groups")
            params = [p for group in self.param_groups for p in group["params"]]
            if not set(state_dict["state"]) <= set(range(len(params))):
                raise ValueError("state for parameters this optimizer does not have")
            for index, p in enumerate(params):
                self._inner.load_compact_state(p, state_dict["state"].get(index, {}))
            for group, saved in zip(self.param_groups, state_dict["param_groups"]):
                group.update({k: v for k, v in saved.items() if k != "params"})
            method.selector.generator.set_state(meta["selector_rng"].cpu())
            for index, i in enumerate(layers):
                trained = torch.zeros_like(method._trained[i])
                trained[meta["trained"][index].cpu()] = True
                method._trained[i] = trained
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise SmfError(f"this optimizer state is not an SmfOptimizer's for this model ({type(e).__name__}: {first}); {fix}") from None
