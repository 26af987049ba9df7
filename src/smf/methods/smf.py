"""Sparse memory finetuning: train only the top-t memory value rows per layer and step.

After each micro-batch the memories report which rows the real tokens read; before
the step the selection rule ranks the step's rows (tf-idf or KL against background
statistics, or a control rule) and the strictly sparse optimizer updates the top-t of
each layer. Nothing else changes: base weights, keys, projections and every
unselected value row stay bit-identical. Until the rows are chosen the value tables'
gradient stays factored (each read's row and weight, the layer's output gradient), so
the step sums the gradient of t rows per layer, never of one row per read.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from smf import __version__
from smf.config import Config, choice, setting
from smf.errors import SmfError
from smf.memory.delta import root_folder, save_delta
from smf.memory.retrofit import memory_layers, memory_reading_zeros, save_retrofitted, set_recording
from smf.methods.anchors import anchor_items, rows_read
from smf.methods.base import Family, Method
from smf.methods.terms import BaseKl, InTurn
from smf.optim import LazyAdam, RowwiseAdagrad, SparseSGD, selected_gradient
from smf.names import BACKGROUND_FILE, SELECTED_FILE
from smf.selection import RULES, BackgroundStats, RowSelector

# name → default learning rate on the value rows. adamw_masked is the published study's arm:
# dense AdamW on the whole value table with the gradient of unselected rows zeroed. It is
# not strictly sparse: Adam's moments keep moving rows selected at earlier steps.
OPTIMIZERS = {"adam": 1.0, "sgd": 2.0, "rowwise_adagrad": 1.0, "adamw_masked": 5e-4}
DENSE = ("adamw_masked",)


def _read_rows(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) read counts → the rows read (ascending) and their counts. The rules that pick rows themselves
    (all, random) and micro-batch selection wait for the device here, once per layer: how many rows were
    read is known only there. The scored rules select in fixed shapes instead (`RowSelector.select_fixed`)."""
    rows = counts.nonzero().flatten()
    return rows, counts[rows]


def _mask_rows(grad: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The gradient with every row outside `keep` (N,) bool zeroed; sparse or dense."""
    if grad.is_sparse:
        grad = grad.coalesce()
        rows = grad.indices()[0]
        inside = keep[rows]
        return torch.sparse_coo_tensor(grad.indices()[:, inside], grad.values()[inside], grad.shape,
                                       check_invariants=False, is_coalesced=True)  # a subset of a coalesced tensor
    return grad * keep[:, None].to(grad.dtype)


@dataclass
class SmfOptions(Config):
    """Which rows train (rule, top_t) and how they step (optimizer)."""

    rule: str = setting("tfidf", "row-selection rule (studies/controls: tfidf against random and all): " + ", ".join(RULES))
    top_t: int = setting(300, "memory value rows trained per layer and step (t) (studies/sweep: t = 300, chosen on validation)")
    optimizer: Literal["adam", "sgd", "rowwise_adagrad", "adamw_masked"] = setting(
        "adam", "adam (strictly sparse, lazy per-row moments), sgd (strictly sparse, no momentum), "
                "rowwise_adagrad (strictly sparse, one state float per row), or "
                "adamw_masked (the published study's: dense AdamW, unselected rows' gradient zeroed; not strictly sparse) "
                "(studies/optimizers: adam)")
    select_every: Literal["step", "micro_batch"] = setting("step", "when rows are selected: step (from the accesses of all its micro-batches) or "
                                        "micro_batch (each micro-batch's gradient masked to its own top-t, as the published "
                                        "study's gradient hooks; the step trains their union)")
    count: Literal["all", "target", "padded"] = setting(
        "all", "whose memory reads rank the rows: all (every real token), target (only the positions that predict a loss "
               "token, e.g. an answer) or padded (every position of the batch, padding included, as the published study counts)")
    scoring: Literal["smf", "published"] = setting(
        "smf", "smf: TF-IDF never chooses a row scoring 0; published: the published study's scores and eligibility (every "
               "row read may be chosen, zero- and negative-scoring rows too when fewer score higher; KL with 1e-8 added to "
               "both shares; no background batches count as one)")
    train_scale: bool = setting(False, "also train the memories' output scale alpha (the published '+S' arm; needs adamw_masked "
                                       "and a memory retrofitted with a scale)")
    anchors: int = setting(0, "questions about made-up subjects per training prompt that names a subject (the subject swapped, "
                              "as smf learn's anchors), answered by the model before training; what they do: anchor_use; 0: none")
    anchor_use: Literal["exclude", "keep", "both"] = setting(
        "keep", "keep: a KL term keeps the anchors' answers (smf learn's kept answers; batch_size of them a step, in turn); "
                "exclude: the rows the anchors read are not trained (TF-IDF 0, as smf learn --anchor-reads exclude); both: as "
                "exclude, for the anchors then never read a trained row and their term stays 0 (studies/baselines: keep halved "
                "the capitals loss for 5 points of gain, exclude left +6.7 of +53.3)")
    keep_weight: float = setting(1.0, "weight of the kept anchors' answers' KL term (anchor_use keep or both)")

    def check(self, where: str) -> None:
        choice(self.rule, RULES, "selection rule", where)
        if self.top_t <= 0:
            raise SmfError(f"{where}: top_t must be a positive number of rows, got {self.top_t}")
        if self.train_scale and self.optimizer not in DENSE:
            raise SmfError(f"{where}: train_scale needs optimizer adamw_masked (the sparse optimizers step value rows only)")
        if self.anchors < 0 or not self.keep_weight > 0:
            raise SmfError(f"{where}: anchors must be >= 0 and keep_weight > 0, got {self.anchors} and {self.keep_weight}")
        if self.anchors and self.anchor_use != "keep" and (self.rule != "tfidf" or self.scoring != "smf"):
            raise SmfError(f"{where}: anchor_use {self.anchor_use} leaves rows out by their TF-IDF; it needs rule tfidf with "
                           "scoring smf (or anchor_use keep)")


class SmfMethod(Method):
    name = "smf"
    about = "the top-t memory value rows per layer and step, strictly sparse optimizer"
    Options = SmfOptions
    needs_memory = True
    compared_as = "smf"
    saves_compactly = True

    @property
    def dense(self) -> bool:
        return self.options.optimizer in DENSE

    @property
    def factored(self) -> bool:
        """Whether the value gradients stay factored until the step's rows are chosen."""
        return not self.dense and self.options.select_every == "step"

    @property
    def clips_itself(self) -> bool:  # type: ignore[override]
        return not self.dense  # the sparse optimizers clip their rows; the trainer clips the masked gradient

    @classmethod
    def families(cls) -> list[Family]:
        return [Family(f"smf-{r.name}", cls.name, {"rule": r.name}, r.color, "smf") for r in RULES.values()]

    @property
    def default_lr(self) -> float:  # type: ignore[override]
        return OPTIMIZERS[self.options.optimizer]

    def prepare(self, model, model_dir: Path | None):
        c, o = self.config, self.options
        self.memories = memory_layers(model)
        if not self.memories:
            raise SmfError("--method smf needs a model with memory layers; run smf retrofit on it first")
        self.model_dir = model_dir
        background = None
        if RULES[o.rule].needs_background:
            if model_dir is None and self.background is None:
                raise SmfError(f"selection rule '{o.rule}' needs background statistics; train from a model folder that has them (smf background)")
            background = self.background or BackgroundStats.load(root_folder(model_dir))
        self._check_processes(background)
        if background is not None:
            for i, memory in self.memories.items():
                if i not in background.df or len(background.df[i]) != memory.slots:
                    raise SmfError(f"background statistics in {model_dir} do not match memory layer {i}; run smf background again")
        self.selector = RowSelector(o.rule, o.top_t, background, seed=c.seed, published=o.scoring == "published")
        model.requires_grad_(False)
        for i, memory in self.memories.items():
            memory.values.requires_grad_(True)
            memory.sparse_grad = not self.dense
            # Rows are chosen after the backward pass: keep V's gradient factored and sum only the
            # chosen rows' (a sparse gradient holds a row per read; micro_batch selection masks it in a hook).
            memory.factored_grad = self.factored
            memory.grad_parts.clear()
            memory.count_padding = o.count == "padded"
            if o.train_scale:
                if memory.scale is None:
                    raise SmfError(f"train_scale: memory layer {i} has no output scale; retrofit with a memory scale (e.g. scale: 0.01)")
                memory.scale.requires_grad_(True)
        set_recording(model, True)
        self._reads: dict[int, torch.Tensor | None] = {i: None for i in self.memories}  # the step's read counts (N,)
        self._selected: dict[int, int | torch.Tensor] = {}  # rows selected per layer (a tensor when chosen in fixed shapes)
        self._chosen: dict[int, list[torch.Tensor]] = {}  # per micro-batch choices (select_every: micro_batch)
        self._hooks: list = []
        # rows ever selected, where the values are (marking them never waits for the device)
        self._trained = {i: torch.zeros(m.slots, dtype=torch.bool, device=m.values.device) for i, m in self.memories.items()}
        return model

    def terms(self, model, tokenizer, data):
        """The anchors (options.anchors): their rows left out of this run's selection, their answers kept, or both."""
        o, c = self.options, self.config
        if not o.anchors:
            return []
        questions, items = anchor_items(model, tokenizer, data, o.anchors, seed=c.seed)
        say = (lambda text: print(f"smf: {text}", file=sys.stderr)) if self.comm.rank == 0 else (lambda text: None)
        if not items:
            say("no training prompt names a subject to swap (a capitalised name that does not start a sentence), or the "
                "model answered none of the anchors: anchors has no effect")
            return []
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        did = []
        if o.anchor_use in ("exclude", "both"):
            read = rows_read(model, items, pad)
            old = self.selector.background  # a copy gets the change: the folder's statistics stay as they are
            background = BackgroundStats.empty({i: len(df) for i, df in old.df.items()}).add(old)
            for i, rows in read.items():
                background.df[i][rows.to(background.df[i].device)] = background.batches
            self.selector = RowSelector(o.rule, o.top_t, background, seed=c.seed, published=False)
            did.append(f"the rows they read left untrained ({' / '.join(f'{int(r.sum()):,}' for r in read.values())} at layers "
                       f"{', '.join(map(str, read))})")
        terms = []
        if o.anchor_use in ("keep", "both"):
            terms.append(BaseKl(InTurn(items, min(len(items), c.batch_size), pad), o.keep_weight, as_base=memory_reading_zeros, name="keep_kl"))
            did.append(f"their answers kept (weight {o.keep_weight:g})")
        say(f"{len(items)} anchors about made-up subjects (such as {questions[0]!r}): {' and '.join(did)}")
        return terms

    def _check_processes(self, background) -> None:
        """With several processes: the same memory and background everywhere (checked on every
        process together, before any process can refuse alone)."""
        if not self.comm.distributed:
            return
        fix = "start every process from the same model folder and background statistics (smf background)"
        self.comm.same([m.slots for m in self.memories.values()], "the memory layers' slot counts", fix)
        if background is not None:
            self.comm.same([len(background.df.get(i, ())) for i in self.memories], "the background statistics' slot counts", fix)

    def make_optimizer(self, model):
        c = self.config
        if self.dense:
            return torch.optim.AdamW([p for _, p in self.trainable(model)], lr=self.lr, betas=tuple(c.betas), weight_decay=c.weight_decay)
        params = [m.values for m in self.memories.values()]
        if self.options.optimizer == "sgd":
            return SparseSGD(params, lr=self.lr, max_grad_norm=c.max_grad_norm)
        if self.options.optimizer == "rowwise_adagrad":
            return RowwiseAdagrad(params, lr=self.lr, max_grad_norm=c.max_grad_norm)
        return LazyAdam(params, lr=self.lr, betas=tuple(c.betas), weight_decay=c.weight_decay, max_grad_norm=c.max_grad_norm)

    def before_forward(self, model, batch: dict) -> None:
        if self.options.count == "target":  # record the reads of positions whose next token carries loss
            mask = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
            mask[:, :-1] = batch["labels"][:, 1:] != -100
            for memory in self.memories.values():
                memory.record_mask = mask

    def after_forward(self, model) -> None:
        per_micro_batch = self.options.select_every == "micro_batch"
        self._remove_hooks()
        for i, memory in self.memories.items():
            counts = memory.read_counts()  # (N,) on the device: no host sync in the forward pass
            self._reads[i] = counts if self._reads[i] is None else self._reads[i].add_(counts)
            memory.record_mask = None  # only for this micro-batch
            if per_micro_batch:  # select now, and let only the selected rows' gradient through this backward
                chosen = self.selector.select(i, *_read_rows(counts))
                self._chosen.setdefault(i, []).append(chosen)
                keep = torch.zeros(memory.slots, dtype=torch.bool, device=memory.values.device)
                keep[chosen.to(keep.device)] = True
                self._hooks.append(memory.values.register_hook(lambda g, keep=keep: _mask_rows(g, keep)))

    def reads_recorded(self) -> bool:
        """Whether a training forward pass was recorded since the last step (`before_step` needs one)."""
        return all(reads is not None for reads in self._reads.values())

    def forget_step(self) -> None:
        """Drop what the micro-batches since the last step left (reads, factored gradients, per micro-batch
        choices), as zeroing the gradients drops theirs."""
        self._remove_hooks()
        self._chosen.clear()
        for i, memory in self.memories.items():
            self._reads[i] = None
            memory.grad_parts.clear()

    def _remove_hooks(self) -> None:
        for handle in getattr(self, "_hooks", []):
            handle.remove()
        self._hooks = []

    def before_step(self, model, optimizer) -> None:
        """Select rows from the step's accesses (all micro-batches) and hand them to the optimizer.

        With several processes (`self.comm`) the access counts are summed first (a dense
        (N,) int32 vector per layer), so every process selects the same rows, and then only
        the selected rows' gradients are summed (t × d per layer): never the whole table.
        With `select_every: micro_batch` each process selects in its own micro-batches and
        the union is taken over processes (an (N,) int32 mark vector per layer); with
        grad_accum / processes micro-batches each, they are one process's micro-batches.
        """
        comm = self.comm
        chosen, valid = {}, {}
        # the scored rules choose in fixed shapes, on the device: the step never waits for it
        fixed = self.factored and self.selector.fixed_size
        self._remove_hooks()
        for i, memory in self.memories.items():
            reads, self._reads[i] = self._reads[i], None
            if self.options.select_every == "micro_batch":  # the union of the micro-batches' own choices
                union = torch.cat(self._chosen.pop(i)).unique()
                if comm.distributed:  # ... over every process's micro-batches
                    mark = torch.zeros(memory.slots, dtype=torch.int32, device=comm.device)
                    mark[union.to(comm.device)] = 1
                    union = comm.sum_(mark).nonzero().flatten()
                else:
                    comm.note(memory.slots * 4)
                chosen[memory.values] = union
            else:
                if comm.distributed:
                    reads = comm.sum_(reads.to(device=comm.device, dtype=torch.int32)).long()
                else:
                    comm.note(memory.slots * 4)
                if fixed:  # valid marks the chosen rows among t (the others only keep the shape fixed)
                    chosen[memory.values], valid[memory.values] = self.selector.select_fixed(i, reads)
                else:
                    chosen[memory.values] = self.selector.select(i, *_read_rows(reads))
            if memory.factored_grad and memory.grad_parts:  # the chosen rows' gradient, and only theirs
                rows = chosen[memory.values].to(memory.values.device)
                memory.values.grad = torch.sparse_coo_tensor(rows[None], memory.selected_grad(rows), memory.values.shape,
                                                             is_coalesced=True, check_invariants=False)
                memory.grad_parts.clear()
            rows = chosen[memory.values].to(self._trained[i].device)
            if memory.values in valid:
                self._selected[i] = valid[memory.values].sum()
                self._trained[i][rows] |= valid[memory.values].to(rows.device)
            else:
                self._selected[i] = len(rows)
                self._trained[i][rows] = True
        if self.dense:  # the published arm: zero the unselected rows' gradient
            for values, rows in chosen.items():
                if values.grad is not None:
                    keep = torch.zeros(values.shape[0], dtype=torch.bool, device=values.device)
                    keep[rows.to(values.device)] = True
                    values.grad[~keep] = 0
        self._sum_selected(chosen, valid)
        if not self.dense:
            optimizer.set_rows(chosen, valid)

    def _sum_selected(self, chosen: dict, valid: dict) -> None:
        """Sum the selected rows' gradients (and a trained scale's) over the processes, in one buffer (`valid`: the
        tables whose rows were chosen in fixed shapes)."""
        comm = self.comm
        scales = [m.scale for m in self.memories.values() if m.scale is not None and m.scale.requires_grad]
        if not comm.distributed:
            comm.note(sum(len(r) * v.shape[1] * v.element_size() for v, r in chosen.items()) + sum(s.element_size() for s in scales))
            return
        grads = []
        for values, rows in chosen.items():
            rows = rows.to(values.device)
            grads.append(selected_gradient(values.grad, rows, values in valid) if values.grad is not None
                         else values.new_zeros(len(rows), values.shape[1]))
        for s in scales:
            if s.grad is None:
                s.grad = torch.zeros_like(s)
        comm.sum_flat_(grads + [s.grad for s in scales])
        for (values, rows), g in zip(chosen.items(), grads):
            rows = rows.to(values.device)
            if self.dense:
                if values.grad is None:
                    values.grad = torch.zeros_like(values)
                values.grad[rows] = g
            else:
                values.grad = torch.sparse_coo_tensor(rows[None], g, values.shape, is_coalesced=True, check_invariants=False)

    def step_stats(self, optimizer) -> dict:
        if self.dense:
            return {"rows_selected": sum(self._selected.values()), "rows_selected_per_layer": dict(self._selected)}
        stats = optimizer.read_stats()
        stats["rows_selected_per_layer"] = {i: int(n) for i, n in self._selected.items()}
        if isinstance(optimizer, LazyAdam):
            stats["rows_with_state"] = optimizer.rows_with_state()
        return stats

    def extra_state(self) -> dict:
        return {"selector_rng": self.selector.generator.get_state(), "trained": {i: t.cpu().clone() for i, t in self._trained.items()}}

    def load_extra_state(self, state: dict) -> None:
        self.selector.generator.set_state(state["selector_rng"])
        for i, rows in state.get("trained", {}).items():
            self._trained[i] = rows.to(self._trained[i].device, copy=True)

    def summary_stats(self, model) -> dict:
        """What the run trained, beside the size of the tables it could train."""
        rows = sum(int(t.sum()) for t in self._trained.values())
        return {"rows_trained": rows, "parameters_trained": sum(int(t.sum()) * self.memories[i].value_dim for i, t in self._trained.items()),
                "table_parameters": sum(m.values.numel() for m in self.memories.values())}

    def save_selected(self, out: Path) -> None:
        """The rows this run ever selected, per layer (`smf inspect` checks changes against them)."""
        tmp = Path(out) / f".{SELECTED_FILE}.tmp"
        save_file({f"rows.{i}": t.nonzero().flatten().cpu() for i, t in self._trained.items()}, str(tmp))
        os.replace(tmp, Path(out) / SELECTED_FILE)

    def optimizer_state_bytes(self, optimizer) -> int:
        return super().optimizer_state_bytes(optimizer) if self.dense else optimizer.state_bytes()

    def export(self, model):
        set_recording(model, False)  # evaluation needs no access records
        for memory in self.memories.values():
            memory.factored_grad = False
            memory.grad_parts.clear()
        return model

    def save(self, model, tokenizer, out: Path, standalone: bool = False) -> None:
        """A compact delta folder (the changed value rows over `model_dir`), or with
        `standalone` (or no `model_dir`) a full retrofitted folder with the background statistics."""
        set_recording(model, False)
        try:
            if self.model_dir is not None and not standalone:
                save_delta(model, self.model_dir, out, extra={"smf_version": __version__, "method": self.name})
                self.save_selected(out)
                return
            background = root_folder(self.model_dir) / BACKGROUND_FILE if self.model_dir else None
            save_retrofitted(model, tokenizer, out, overwrite=True, copy_files=[background] if background and background.is_file() else [])
        finally:
            set_recording(model, True)
