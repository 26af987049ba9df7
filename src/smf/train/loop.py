"""The one training loop, shared by every method (smf, lora, full, heal).

Methods differ only in what is trainable and how it steps (`smf.methods`). The loop
reads top to bottom: encode the examples; for each step take the next examples in a
seeded order, run the micro-batches forward and backward (loss on target tokens
only), let the method select rows, clip, step, log; checkpoint atomically every N
steps; at the end write the model and a summary.

Runs on `accelerate`: the CPU here, one GPU (bf16 autocast), or several through
`accelerate launch`. A killed run continues with `resume=True` and ends bit-identical
to an uninterrupted one (the example order is a pure function of seed and step, and
checkpoints hold weights, optimizer, scheduler and RNG states).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import psutil
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from smf.data.batching import IGNORE, Encoded, collate, encode_examples, step_indices
from smf.data.types import TrainExample
from smf.distributed import Comm, check_split
from smf.errors import SmfError
from smf.io import (MAX_LINE_BYTES, MAX_LOG_BYTES, MAX_RECORD_BYTES, atomic_dir, check_output_path, read_json, read_lines, reading,
                    write_json_atomic, write_text_atomic)
from smf.memory.delta import checksum, content_checksum, fingerprint, is_delta, root_folder
from smf.methods import TrainConfig, make_method
from smf.models import autocast as smf_autocast
from smf.names import (
    ADAPTER_BASE_FILE,
    ADAPTER_WEIGHTS,
    BACKGROUND_FILE,
    CHECKPOINT,
    CONFIG_FILE,
    DELTA_WEIGHTS,
    FINGERPRINT_FILE,
    LOG_FILE,
    OLD_STATE_FILE,
    STATE_FILE,
    SUMMARY_FILE,
    WEIGHTS_FILE,
)
from smf.state import load_state, save_state



class TargetLoss(nn.Module):
    """Summed next-token cross-entropy over target tokens, and their count.

    Projects only the hidden states that predict a target token through the LM head,
    so answer-only batches do not pay for logits at every position. Wrapping the model
    in a module keeps `accelerate`'s distributed wrapper in the forward path.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids, attention_mask, labels: (B, T) → (loss sum, number of target tokens)."""
        core = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        hidden = core.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state  # (B, T, d)
        targets = labels[:, 1:]
        keep = targets != IGNORE
        logits = core.get_output_embeddings()(hidden[:, :-1][keep]).float()  # (n, vocab)
        return F.cross_entropy(logits, targets[keep], reduction="sum"), keep.sum()


def checkpoint_activations(model: nn.Module, on: bool) -> None:
    """Switch transformers' activation checkpointing of the decoder layers on or off.

    Non-reentrant checkpoints (torch.utils.checkpoint with use_reentrant=False) give gradients
    to the parameters inside a layer whatever its inputs, so the inputs need not require
    grad: transformers' hook that makes the embeddings' output require grad is removed again,
    or the backward pass would run through every layer below the first trainable one (for
    SMF, the layers below the first memory). Checkpointing acts in training mode only, so a
    model left with it on (a run that failed) still evaluates as before.
    """
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    if on:
        enable = getattr(core, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:  # transformers before the rename
            core.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        core.disable_input_require_grads()
    else:
        disable = getattr(core, "activation_checkpointing_disable", None) or core.gradient_checkpointing_disable
        disable()


# ---------------------------------------------------------------- measurement


class PeakMemory:
    """Peak memory during a block: CUDA allocator peak, or sampled process RSS growth on CPU.

    `paused()` leaves out a part of the block (the evaluations during training): on CUDA its
    allocations do not count; on a CPU the sampler stops, though memory the evaluation keeps
    (the allocator rarely returns it) still shows in later samples.
    """

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0
        self._before_pause = 0
        self._paused = False

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        self._proc = psutil.Process()
        self.start = self._proc.memory_info().rss
        self._high = self.start
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.05):
                if not self._paused:
                    self._high = max(self._high, self._proc.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    @contextlib.contextmanager
    def paused(self):
        if self.device.type == "cuda":
            self._before_pause = max(self._before_pause, torch.cuda.max_memory_allocated(self.device))
        self._paused = True
        try:
            yield
        finally:
            self._paused = False
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = max(self._before_pause, torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            self._thread.join()
            self.peak = self._high
        self.growth = self.peak - self.start
        return False


# ---------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    model: nn.Module  # ready to evaluate (LoRA merged), in eval mode
    summary: dict[str, Any]
    log: list[dict] = field(default_factory=list)


def lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    """The factor of the peak learning rate that optimizer update `step + 1` takes (LambdaLR's convention).

    schedule_as smf: warm-up (step+1)/(warmup_steps+1), so the first update already learns; transformers:
    step/warmup_steps, so update 1 takes 0 and warm-up ends one update later (its schedules, e.g.
    get_cosine_schedule_with_warmup). After warm-up both decay alike over the remaining steps."""
    hf = config.schedule_as == "transformers"

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return step / config.warmup_steps if hf else (step + 1) / (config.warmup_steps + 1)
        if config.schedule == "constant":
            return 1.0
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        if config.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class Term(Protocol):
    """An extra term of the training loss, beside the examples' own (`smf learn`'s kept answers,
    smf.train.keep.Keep, are one).

    At each optimizer step, after the examples' forward and backward passes (so a method never
    counts the term's reads: SMF chooses its rows from the examples alone), the loop calls
    `backward(model, step, device=, autocast=, backward=)`: the term computes its weighted loss at
    step `step` (0-based) on `model` under `autocast`, hands it (whole, or in pieces, so that one
    piece's activations are held at a time) to `backward`, the loop's, which scales it for the
    processes, and returns its value for the log, under the key `name`. Every process computes
    the whole term."""

    name: str

    def backward(self, model: nn.Module, step: int, *, device, autocast, backward: Callable[[torch.Tensor], None]) -> float: ...


def train(
    model: nn.Module,
    tokenizer,
    examples: list[TrainExample] | list[Encoded],
    config: TrainConfig,
    out: str | Path,
    *,
    model_dir: str | Path | None = None,
    resume: bool = False,
    eval_fn: Callable[[nn.Module, int], dict | None] | None = None,
    eval_every: int = 0,
    save_model: bool = True,
    background=None,
    terms: list[Term] = (),
    progress: bool = True,
) -> TrainResult:
    """Train `model` on `examples` with `config`; write the run to the folder `out`.

    model_dir: the folder the model was loaded from (background statistics for smf,
    the base that a LoRA adapter names). eval_fn(model, step) → metrics, called every
    `eval_every` steps (0: never) and at the end, logged beside the losses (training curves); None logs
    nothing (a caller that evaluates the final model itself).
    The model is saved in OUT/model (unless `save_model` is false): compact where the method
    can (an SMF delta over `model_dir`, a LoRA adapter).
    `background`: SMF's background statistics, instead of those beside `model_dir`.
    `terms`: extra terms of the loss (`Term`), each added at every step.
    """
    out = Path(out)
    model_dir = Path(model_dir) if model_dir is not None else None
    cuda = torch.cuda.is_available()
    accelerator = Accelerator(cpu=not cuda)
    comm = Comm.of(accelerator)
    main = accelerator.is_main_process
    check_split(config.batch_size, config.grad_accum, comm.world)
    resuming = check_output(out, config, resume)
    accelerator.wait_for_everyone()  # every process checked OUT before the main one writes to it
    fitted: dict[str, int] = {}  # examples over max_length: truncated (answer's end) or dropped (question too long)
    data = examples if examples and isinstance(examples[0], Encoded) else encode_examples(examples, tokenizer, config.max_length, fitted)
    if main and any(fitted.values()):
        print(f"smf: {fitted['truncated']} training examples longer than max_length {config.max_length} lost the end of "
              f"their answer, {fitted['dropped']} were dropped (their question alone is that long)", file=sys.stderr)
    prompted = data  # each prompt marked, for a method's terms (SMF's anchors)
    if config.loss == "text":  # the whole example carries the loss, prompt included
        data = [Encoded(e.ids, 0) for e in data]
    whole_epochs = config.schedule_as == "transformers"  # steps end at each epoch's end, the last one short
    if whole_epochs and comm.world > 1 and len(data) % config.batch_size:
        raise SmfError(f"schedule_as transformers ends each epoch on a short step ({len(data) % config.batch_size} of "
                       f"{config.batch_size} examples), which smf trains in one process only; run one process, or use "
                       "schedule_as smf")
    started_from = run_fingerprint(model_dir, data)
    if resuming:
        _check_fingerprint(out, started_from, model_dir, data)
    stored_config = config
    if config.epochs is not None:
        config = dataclasses.replace(config, steps=config.epoch_steps(len(data)))
    set_seed(config.seed)  # LoRA's initial adapters and dropout draw from the global RNGs
    method = make_method(config)
    method.background = background
    method.comm = comm
    if (bad := _non_finite(model)) is not None:  # before any step: not the learning rate's doing
        where = f"the model folder {model_dir}" if model_dir is not None else "the model"
        raise SmfError(f"{where} holds weights that are not finite numbers ({bad} holds inf or NaN): it is damaged, or was "
                       "written so; nothing was trained; give a model folder whose weights are all numbers")
    model = method.prepare(model, model_dir)
    terms = [*terms, *method.terms(model, tokenizer, prompted)]  # before a checkpoint loads: a term may copy the starting model
    optimizer = method.make_optimizer(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    # Autocast is ours rather than accelerate's: its mixed-precision setting is process-wide
    # and fixed at first use, and one process may train several runs (smf compare).
    autocast = smf_autocast(accelerator.device, config.mixed_precision)
    # No DistributedDataParallel: the methods sum their gradients over processes themselves
    # (`Method.before_step`; smf.distributed says why).
    loss_module = TargetLoss(model).to(accelerator.device)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    start_step, log = 0, []
    if resuming and (out / CHECKPOINT).is_dir():
        start_step, log = _load_checkpoint(out, model, method, optimizer, scheduler, write_log=main)
    elif main:
        # The run starts here: only now does OUT become a run folder (a command that failed
        # before this point leaves OUT as it found it).
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / CONFIG_FILE, stored_config.to_dict())
        write_json_atomic(out / FINGERPRINT_FILE, started_from)
        write_text_atomic(out / LOG_FILE, "")
    trainable = [p for _, p in method.trainable(model)]
    n_trainable = sum(p.numel() for p in trainable)

    accelerator.wait_for_everyone()
    log_file = (out / LOG_FILE).open("a", encoding="utf-8") if main else None
    # Each process takes its share of the global batch, in grad_accum micro-batches.
    share = config.batch_size // comm.world
    micro = share // config.grad_accum
    tokens_done = sum(r.get("tokens", 0) for r in log if "loss" in r)
    train_seconds = sum(r.get("seconds", 0.0) for r in log if "loss" in r)
    if config.gradient_checkpointing:
        checkpoint_activations(model, True)
    model.train()
    bar = tqdm(total=config.steps, initial=start_step, desc=f"train {config.method}", disable=not progress or not accelerator.is_main_process, unit="step")
    with PeakMemory(accelerator.device) as memory:
        for step in range(start_step, config.steps):
            started = time.perf_counter()
            items = [data[i] for i in step_indices(len(data), step, config.batch_size, config.seed, whole_epochs)]
            step_targets = sum(max(0, len(x.ids) - max(x.n_prompt, 1)) for x in items)  # over the global batch
            items = items[comm.rank * share : (comm.rank + 1) * share]
            batches = [collate(items[j : j + micro], pad_id) for j in range(0, len(items), micro)]
            loss_total, tokens = 0.0, 0
            for batch in batches:
                tokens += int(batch["attention_mask"].sum())  # counted on the host, before the batch goes to the device
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                with record_function("train/forward"):  # the phases name themselves in torch's profiler
                    method.before_forward(model, batch)
                    with autocast:
                        loss_sum, n_targets = loss_module(**batch)
                    method.after_forward(model)
                with record_function("train/backward"):
                    own_mean = config.micro_batch_loss == "own_mean"  # the micro-batch's mean, not the step's share
                    accelerator.backward(loss_sum / (n_targets.clamp(min=1) if own_mean else max(step_targets, 1)))
                loss_total = loss_total + loss_sum.detach().double()  # read once the step's micro-batches are done
            # After the step's last after_forward (Term says why); the gradients are summed over the processes,
            # each of which computed the whole term, hence 1 / world.
            values = {}
            for term in terms:
                with record_function(f"train/{term.name}"):
                    values[term.name] = term.backward(loss_module.model, step, device=accelerator.device, autocast=autocast,
                                                      backward=lambda loss: accelerator.backward(loss / comm.world))
            loss_total = float(loss_total)
            if comm.distributed:  # the step's loss and tokens over all processes (for the log, and one verdict on NaN)
                loss_total, tokens = _sum_over(comm, loss_total, tokens)
            if not math.isfinite(loss_total) or not all(math.isfinite(v) for v in values.values()):
                bar.close()
                if log_file:
                    log_file.close()
                raise SmfError(_not_finite(out, step + 1, loss_total / max(step_targets, 1), method.lr, _non_finite(model)))
            comm.take_bytes()
            with record_function("train/before_step"):  # smf: choose the rows, gather their gradients
                method.before_step(model, optimizer)
            sent = comm.take_bytes()
            if config.max_grad_norm and not method.clips_itself:
                with record_function("train/clip"):
                    accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            with record_function("train/optimizer"):
                try:
                    optimizer.step()
                except RuntimeError as e:  # torch's Adam: the step size (lr over the bias correction) past the float range
                    if "overflow" not in str(e):
                        raise
                    bar.close()
                    if log_file:
                        log_file.close()
                    raise SmfError(_not_finite(out, step + 1, None, method.lr, "its update overflows a float")) from None
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - started
            tokens_done += tokens
            train_seconds += seconds
            record = {"step": step + 1, "loss": loss_total / max(step_targets, 1), "lr": lr, "tokens": tokens,
                      "target_tokens": step_targets, "seconds": seconds, "tokens_per_s": tokens / seconds,
                      "allreduce_bytes": sent, **method.step_stats(optimizer), **values}
            log.append(record)
            if log_file:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{tokens / seconds:.0f}")
            bar.update()
            done = step + 1 == config.steps
            if main and eval_fn is not None and ((eval_every and (step + 1) % eval_every == 0) or done):
                model.eval()
                with memory.paused():  # the peak is training's, not the evaluation's
                    evaluated = eval_fn(model, step + 1)
                model.train()
                if evaluated is not None:
                    record = {"step": step + 1, "eval": evaluated}
                    log.append(record)
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
            if main and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and not done:
                if (bad := _non_finite(model)) is not None:  # never in place of the last checkpoint of numbers
                    bar.close()
                    log_file.close()
                    raise SmfError(_not_finite(out, step + 1, None, method.lr, bad))
                _save_checkpoint(out, step + 1, model, method, optimizer, scheduler, config)
    bar.close()
    if log_file:
        log_file.close()
    if config.gradient_checkpointing:
        checkpoint_activations(model, False)
    model.eval()
    _check_finite(model, method.lr)
    if save_model and main:
        method.save(model, tokenizer, out / "model")
    losses = [r["loss"] for r in log if "loss" in r]
    summary = {
        "method": config.method,
        "steps": config.steps,
        "tokens": tokens_done,
        "train_seconds": train_seconds,
        "train_tokens_per_s": tokens_done / train_seconds if train_seconds else None,
        "peak_memory_bytes": memory.peak,
        "peak_memory_growth_bytes": memory.growth,
        "trainable_parameters": n_trainable,
        "optimizer_state_bytes": method.optimizer_state_bytes(optimizer),
        "processes": comm.world,
        "allreduce_bytes_per_step": _mean([r["allreduce_bytes"] for r in log if "allreduce_bytes" in r]),
        **method.summary_stats(model),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "resumed_from_step": start_step,
        "examples_truncated": fitted.get("truncated", 0),
        "examples_dropped": fitted.get("dropped", 0),
    }
    if main:
        write_json_atomic(out / SUMMARY_FILE, summary)
    accelerator.wait_for_everyone()  # the run folder is complete when train returns on any process
    return TrainResult(method.export(model).eval(), summary, log)


def _sum_over(comm: Comm, loss: float, tokens: int) -> tuple[float, int]:
    both = comm.sum_(torch.tensor([loss, float(tokens)], dtype=torch.float64, device=comm.device))
    comm.take_bytes()  # bookkeeping, not the method's gradient traffic
    return float(both[0]), int(both[1])


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def check_output(out: Path, config: TrainConfig, resume: bool) -> bool:
    """Check the run folder before any work; True if it holds this run, unfinished, to resume.

    A different run's folder, a finished run, a file or a folder of other things is never
    written to. Nothing is created here (see `train`: the folder appears when the run starts).
    """
    config_file = out / CONFIG_FILE
    check_output_path(out)
    if out.exists() and not out.is_dir():
        raise SmfError(f"{out} is a file; --out is the folder of a training run (new or empty)")
    if out.exists() and any(out.iterdir()):
        if not config_file.is_file():
            raise SmfError(f"{out} is not empty and not a training run folder (no {CONFIG_FILE}); choose a new or empty --out")
        if not resume:
            raise SmfError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
        try:  # read back through the schema, so settings added since (at their defaults) compare equal
            theirs = TrainConfig.from_dict(read_json(config_file, MAX_RECORD_BYTES), where=str(config_file)).to_dict()
        except SmfError:
            theirs = None
        if theirs != config.to_dict():
            raise SmfError(f"{out} holds a run with a different config; choose another --out")
        if (out / SUMMARY_FILE).is_file():
            raise SmfError(f"{out} holds a finished run; nothing to resume")
        return True
    return False


def _non_finite(model: nn.Module) -> str | None:
    """The name of the first parameter of `model` that holds inf or NaN; None when all are numbers."""
    with torch.no_grad():
        return next((n for n, p in model.named_parameters() if not torch.isfinite(p).all()), None)


def _check_finite(model: nn.Module, lr: float) -> None:
    """Refuse to hand back weights that are not all numbers: a finite loss at every step does not rule out
    an update of inf on the last one (the weights were numbers when training began: `train` checks)."""
    bad = _non_finite(model)
    if bad is not None:
        raise SmfError(f"the learning rate (--lr {lr:g}) made the trained weights non-finite ({bad} holds inf or NaN); "
                       "no model was saved; start again with a lower --lr")


def _not_finite(out: Path, step: int, loss: float | None, lr: float, bad: str | None) -> str:
    """The one line for a run whose loss, or weights, stopped being numbers at `step` (`bad`: the weight that did,
    or why; the weights were numbers when training began)."""
    meta = out / CHECKPOINT / "meta.json"
    where = (f"its checkpoint at step {read_json(meta, MAX_RECORD_BYTES)['step']} is kept: continue with --resume"
             if meta.is_file() else "no checkpoint was saved (--checkpoint-every)")
    what = f"step {step}: the training loss is {loss} (not a finite number)" if loss is not None else f"step {step}"
    if bad is None:
        return f"{what}; training stopped before applying it; {where}, or start again with a lower --lr (it was {lr:g})"
    why = bad if " " in bad else f"{bad} holds inf or NaN"
    return (f"{what}: the learning rate (--lr {lr:g}) made the weights non-finite ({why}); training stopped; "
            f"{where}, or start again with a lower --lr")


def run_fingerprint(model_dir: Path | None, data: list[Encoded]) -> dict:
    """What a run starts from, by content: the model folder (`fingerprint`: its weights tensor by tensor, its
    architecture and memory settings, a delta's or a LoRA run's base), its background statistics (tensors and
    batch count) and the encoded training data; None where a run has no model folder. A folder written again
    with the same content (another header order, other metadata) matches; one re-made with other memory
    settings over the same weights does not."""
    background = root_folder(model_dir) / BACKGROUND_FILE if model_dir is not None else None
    return {
        "by": "content",
        "model": _model_content(model_dir) if model_dir is not None else None,
        "background": content_checksum(background) if background is not None and background.is_file() else None,
        "data": _data_checksum(data),
        "model_dir": str(model_dir.resolve()) if model_dir is not None else None,
    }


def _model_content(folder: Path) -> str:
    base = folder / ADAPTER_BASE_FILE  # a LoRA run's base, by the content it recorded (checked when it loads)
    meta = read_json(base, MAX_RECORD_BYTES) if base.is_file() else None
    recorded = meta.get("base_fingerprint") if isinstance(meta, dict) else None
    return fingerprint(folder) if recorded is None else hashlib.sha256(f"{fingerprint(folder)} {recorded}".encode()).hexdigest()


def _data_checksum(data: list[Encoded]) -> str:
    digest = hashlib.sha256()
    for example in data:
        digest.update(json.dumps([example.n_prompt, example.ids]).encode())
    return digest.hexdigest()


def _bytes_fingerprint(model_dir: Path | None, data: list[Encoded]) -> dict:
    """The fingerprint smf wrote before it compared by content (the bytes of the weights and background
    files): a run begun then is resumed against it."""
    def weights(folder: Path) -> str | None:
        names = (DELTA_WEIGHTS, ADAPTER_WEIGHTS, WEIGHTS_FILE)
        found = [checksum(folder / n) for n in names if (folder / n).is_file()]
        if is_delta(folder):
            found.append(checksum(root_folder(folder) / WEIGHTS_FILE))
        return hashlib.sha256("".join(found).encode()).hexdigest() if found else None

    background = root_folder(model_dir) / BACKGROUND_FILE if model_dir is not None else None
    return {
        "model": weights(model_dir) if model_dir is not None else None,
        "background": checksum(background) if background is not None and background.is_file() else None,
        "data": _data_checksum(data),
    }


def _check_fingerprint(out: Path, now: dict, model_dir: Path | None, data: list[Encoded]) -> None:
    """Refuse to resume a run onto another model, background or data (one line naming it)."""
    file = out / FINGERPRINT_FILE
    if not file.is_file():
        return  # a run folder from before fingerprints: nothing to compare
    then = read_json(file, MAX_RECORD_BYTES)
    if not isinstance(then, dict):
        raise SmfError(f"{file} is not a run's fingerprint; remove the run folder to start again, or choose another --out")
    if then.get("by") != "content":  # begun by an smf that compared bytes
        now = _bytes_fingerprint(model_dir, data)
    what = {"model": ("model weights or memory settings", "--model"), "background": ("background statistics", "--model (smf background)"),
            "data": ("training data", "--data")}
    for key, (name, flag) in what.items():
        if then.get(key) != now.get(key):
            raise SmfError(f"{out} was trained on other {name} than these (checksums differ; it started from "
                           f"{then.get('model_dir') or 'an in-memory model'}); resume with the same {flag}, or choose another --out")


def _save_checkpoint(out: Path, step: int, model, method, optimizer, scheduler, config: TrainConfig) -> None:
    with atomic_dir(out / CHECKPOINT, overwrite=True) as tmp:
        state = {k: v.contiguous().cpu() for k, v in method.trainable_state(model).items()}
        save_file(state, str(tmp / "trainable.safetensors"))
        save_state(
            tmp / STATE_FILE,
            {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "method": method.extra_state(),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            },
        )
        write_json_atomic(tmp / "meta.json", {"step": step, "config": config.to_dict()})


def _log_lines(path: Path) -> list[dict]:
    """The records of a run's log. Every record ends in a newline, so text after the last one is a record
    cut short (a crash or a full disk mid-write): it is dropped, with a note, and the run resumes."""
    fix = "remove the run folder to start again, or choose another --out"
    records = []
    for n, line in read_lines(path, limit=MAX_LOG_BYTES, line_limit=MAX_LINE_BYTES, what="training log", fix=fix):
        if not line.endswith("\n"):
            if line.strip():
                print(f"smf: {path}: its last line was cut short (a crash or a full disk while writing); it is dropped", file=sys.stderr)
            break
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError, as is an integer past the digit limit
            raise SmfError(f"{path}: line {n} is not valid JSON; delete that line and resume again") from None
        if not isinstance(records[-1], dict):
            raise SmfError(f"{path}: line {n} is not a log record; delete that line and resume again")
    return records


def _load_checkpoint(out: Path, model, method, optimizer, scheduler, write_log: bool = True) -> tuple[int, list[dict]]:
    folder = out / CHECKPOINT
    fix = f"the checkpoint is damaged; remove {folder} to start the run again, or choose another --out"
    if (folder / OLD_STATE_FILE).exists() and not (folder / STATE_FILE).exists():
        # never unpickled: a pickle runs whatever code its writer put in it
        raise SmfError(f"{folder} was written by an older smf (its state is a pickle, {OLD_STATE_FILE}, which smf no longer "
                       f"loads); remove {folder} to start the run again, or choose another --out")
    with reading(folder / "trainable.safetensors", fix):
        trainable = load_file(str(folder / "trainable.safetensors"))
    state = load_state(folder / STATE_FILE, fix)
    try:  # well-formed but of another run or shape: torch's own checks say which part
        method.load_trainable_state(model, trainable)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        method.load_extra_state(state["method"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        if state["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        step = state["step"]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step {step!r:.40} is not a step number")
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise SmfError(f"{folder / STATE_FILE} does not fit this run ({type(e).__name__}: {first}); {fix}") from None
    if (bad := _non_finite(model)) is not None:
        raise SmfError(f"{folder} holds weights that are not finite numbers ({bad} holds inf or NaN); {fix}")
    # The log may run past the checkpoint (the run was killed later): cut it back.
    lines = _log_lines(out / LOG_FILE)
    log = [r for r in lines if r.get("step", step + 1) <= step]
    if write_log:
        write_text_atomic(out / LOG_FILE, "".join(json.dumps(r) + "\n" for r in log))
    return step, log
