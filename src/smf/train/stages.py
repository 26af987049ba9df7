"""The stages that prepare a memory model before SMF training: heal, then background statistics
(`collect_background` runs a model over batches and counts the rows they read).

`smf heal` and `smf background` run one stage each; a study runs both on its memory
model. Both read their settings from one config dataclass (`HealConfig`,
`BackgroundConfig`), so the commands and a study share their defaults.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from tqdm.auto import tqdm

from smf.data.batching import collate, document_sequences, encode_examples, text_chunks
from smf.data.sources import for_seed, general_texts
from smf.errors import SmfError
from smf.memory.retrofit import load_retrofitted, memory_layers, set_recording
from smf.methods.heal import HealConfig
from smf.models import autocast, compute_device, load_tokenizer
from smf.names import MEMORY_FILE
from smf.selection import BackgroundConfig, BackgroundStats
from smf.train.loop import TrainResult, train


def _require_memory(folder: Path) -> None:
    if not (folder / MEMORY_FILE).is_file():
        raise SmfError(f"{folder} has no memory layers (no {MEMORY_FILE}); run smf retrofit first")


@torch.no_grad()
def collect_background(model, batches, progress: bool = True, mixed_precision: str = "auto") -> BackgroundStats:
    """Run `batches` (dicts with input_ids, attention_mask (B, T)) through a retrofitted
    model and count, per memory layer, which rows their real tokens read (in the
    precision training reads them: `mixed_precision` as in TrainConfig)."""
    memories = memory_layers(model)
    if not memories:
        raise SmfError("background statistics need a model with memory layers; run smf retrofit first")
    stats = BackgroundStats.empty({i: m.slots for i, m in memories.items()})
    device = next(model.parameters()).device
    precision = autocast(device, mixed_precision)
    was_training = model.training
    model.eval()
    set_recording(model, True)
    # The reads are made by the last memory layer's forward: the layers above it and the logits cannot change them.
    stop = list(memories.values())[-1].register_forward_hook(_stop_forward)
    try:
        for batch in tqdm(batches, desc="background statistics", disable=not progress, unit="batch"):
            with precision, contextlib.suppress(_ReadsTaken):
                model.get_decoder()(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            stats.add_counts({i: m.read_counts() for i, m in memories.items()})
    finally:
        stop.remove()
        set_recording(model, False)
        model.train(was_training)
    return stats


class _ReadsTaken(Exception):
    """Ends a forward pass once the last memory layer has recorded its reads."""


def _stop_forward(module, args, output) -> None:
    raise _ReadsTaken


def background_statistics(folder: Path, config: BackgroundConfig, *, progress: bool = True) -> BackgroundStats:
    """Count which memory rows general text reads in the retrofitted model of `folder`; save them there."""
    folder = Path(folder)
    _require_memory(folder)
    tokenizer = load_tokenizer(folder)
    texts = general_texts(config.data, "background data")
    chunks = (text_chunks if config.pack else document_sequences)(texts, tokenizer, config.max_length)
    needed = config.batches * config.batch_size
    if len(chunks) < needed:
        made = f"{len(chunks)} sequences of {config.max_length} tokens" if config.pack else f"{len(chunks)} documents"
        raise SmfError(f"background data gives {made}; {config.batches} batches of {config.batch_size} need {needed}")
    batches = [collate(chunks[i : i + config.batch_size], tokenizer.pad_token_id) for i in range(0, needed, config.batch_size)]
    stats = collect_background(load_retrofitted(folder, device=compute_device()), batches, progress=progress,
                               mixed_precision=config.mixed_precision)
    stats.save(folder)
    return stats


def reads_as_documents(model, tokenizer, examples, max_length: int) -> BackgroundStats:
    """The memory reads of each example (TrainExample) through `model`, each example one document."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return collect_background(model, [collate([e], pad) for e in encode_examples(examples, tokenizer, max_length)], progress=False)


def heal(folder: Path, config: HealConfig, out: Path, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train every memory parameter of the model in `folder` on general text; the healed model goes to OUT/model.

    `config.data` with `seed: run` draws with the heal's `seed` (a study puts its run seed in first)."""
    folder = Path(folder)
    _require_memory(folder)
    tokenizer = load_tokenizer(folder)
    texts = general_texts(for_seed(config.data, config.seed), "heal data")  # seed: run is the heal's seed
    if config.pack:
        chunks = text_chunks(texts, tokenizer, config.max_length)
    else:  # one document per sequence, as the published study heals
        chunks = document_sequences(texts, tokenizer, config.max_length, min_tokens=2)
        if not chunks:
            raise SmfError("heal data: every document is one token or none; give longer texts")
    train_config = config.train_config()
    if config.epochs is not None:
        config.check_warmup(train_config.epoch_steps(len(chunks)), "heal",
                            f"{config.epochs:g} epochs of {len(chunks)} sequences in batches of {config.batch_size}")
    return train(load_retrofitted(folder), tokenizer, chunks, train_config, out, model_dir=folder,
                 resume=resume, progress=progress)
