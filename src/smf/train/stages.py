"""The stages that prepare a memory model before SMF training: heal, then background statistics.

`smf heal` and `smf background` run one stage each; a study runs both on its memory
model. Both read their settings from one config dataclass (`HealConfig`,
`BackgroundConfig`), so the commands and a study share their defaults.
"""

from __future__ import annotations

from pathlib import Path

from smf.errors import SmfError
from smf.memory.retrofit import MEMORY_FILE, load_retrofitted
from smf.methods.heal import HealConfig
from smf.selection import BackgroundConfig, BackgroundStats, collect_background
from smf.train.loop import TrainResult, collate, document_sequences, encode_examples, text_chunks, train


def _require_memory(folder: Path) -> None:
    if not (folder / MEMORY_FILE).is_file():
        raise SmfError(f"{folder} has no memory layers (no {MEMORY_FILE}); run smf retrofit first")


def background_statistics(folder: Path, config: BackgroundConfig, *, progress: bool = True) -> BackgroundStats:
    """Count which memory rows general text reads in the retrofitted model of `folder`; save them there."""
    from smf.data.sources import general_texts
    from smf.models import compute_device, load_tokenizer

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
    """Train every memory parameter of the model in `folder` on general text; the healed model goes to OUT/model."""
    from smf.data.sources import general_texts
    from smf.models import load_tokenizer

    folder = Path(folder)
    _require_memory(folder)
    tokenizer = load_tokenizer(folder)
    chunks = text_chunks(general_texts(config.data, "heal data"), tokenizer, config.max_length)
    return train(load_retrofitted(folder), tokenizer, chunks, config.train_config(), out, model_dir=folder,
                 resume=resume, progress=progress)
