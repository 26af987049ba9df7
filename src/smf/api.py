"""smf's public Python API: what `import smf` serves (`smf.__all__`; docs/api.md lists it).

Thin wrappers over the code the CLI runs: retrofit (`add_memory`), background statistics, SMF in any
torch training loop or transformers' Trainer (`SmfOptimizer`), `smf learn` (`learn`), `smf eval`
(`evaluate_tasks`; `smf.evaluate` is the subpackage of tasks and scorers, and a public name never shadows
a subpackage), loading (`load`), `smf export` (`export`) and `smf ask` (`ask`). Every error a caller can
cause is an `SmfError` whose one line names the problem and the fix.

    import smf
    model = smf.add_memory(model, smf.MemoryConfig())      # any supported transformers causal LM
    stats = smf.background_statistics(model, tokenizer)    # which rows general text reads
    trainer = Trainer(model=model, args=args, train_dataset=data, optimizers=(smf.SmfOptimizer(model, stats), None))
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from smf.data.batching import Encoded, collate, document_sequences, text_chunks
from smf.data.sources import general_texts
from smf.errors import SmfError
from smf.evaluate.evaluator import evaluate as _evaluate
from smf.memory.config import MemoryConfig
from smf.memory.retrofit import memory_layers, retrofit
from smf.models import load_model
from smf.selection import BackgroundConfig, BackgroundStats
from smf.train.hf import SmfOptimizer, install_save
from smf.train.stages import collect_background
from smf.use.chat import answer
from smf.use.export import export as _export
from smf.use.learn import LearnConfig
from smf.use.learn import learn as _learn

__all__ = ["BackgroundStats", "MemoryConfig", "SmfOptimizer", "add_memory", "ask", "background_statistics", "evaluate_tasks",
           "export", "learn", "load"]


def add_memory(model: nn.Module, config: MemoryConfig | None = None) -> nn.Module:
    """Add product-key memory layers to a transformers causal LM (Llama, Qwen2, Mistral and other decoders whose
    blocks have an `.mlp`), in place, and return it.

    config: where and how big (`MemoryConfig`; default: 3 layers at 27, 47 and 67 % of the depth, 65,536 value
    rows each, 4 heads reading 16 rows each, additive with zero values, so the model's outputs do not change
    until trained). The memory takes the model's device and dtype. `model.save_pretrained(folder)` then writes a
    folder that `smf.load` and `AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` load.
    """
    if not isinstance(model, nn.Module):
        raise SmfError(f"add_memory: model must be a transformers causal LM, got {type(model).__name__}")
    if config is not None and not isinstance(config, MemoryConfig):
        raise SmfError(f"add_memory: config must be smf.MemoryConfig, got {type(config).__name__}; e.g. smf.MemoryConfig(slots=16384)")
    return install_save(retrofit(model, MemoryConfig() if config is None else config))


def background_statistics(model: nn.Module, tokenizer, texts: str | Iterable[str] = "docstrings", *, batches: int | None = 512,
                          batch_size: int = 1, max_length: int = 128, pack: bool = True, mixed_precision: str = "auto",
                          progress: bool = False) -> BackgroundStats:
    """Count which memory rows general text reads in `model` (with memory): per layer, the document frequency
    df (N,) (batches that read each row) and the access counts (N,), over `batches` batches. `smf.SmfOptimizer`
    ranks a step's rows against them (TF-IDF: rows general text rarely reads rank first).

    texts: the name of one of smf's general-text sources ("docstrings", the default: the standard library's
    docstrings; "pydoc"; "wikitext"), a .txt/.jsonl file, or the documents themselves: strings, or rows with a
    "text" field (a `datasets.Dataset` of them).
    pack: join the documents with EOS and cut them into sequences of `max_length` tokens; False: each document
    one sequence from its start, cut at `max_length` (chats). batches of batch_size sequences (default 512 of
    1, as `smf background`); None: every sequence the texts make. Save with `.save(folder)`.
    """
    if not memory_layers(model):
        raise SmfError("background_statistics: the model has no memory layers; add them first: smf.add_memory(model, smf.MemoryConfig())")
    config = BackgroundConfig(data=texts if isinstance(texts, (str, Mapping)) else "docstrings", batches=1 if batches is None else batches,
                              batch_size=batch_size, max_length=max_length, pack=pack, mixed_precision=mixed_precision)
    config.check("background_statistics")
    if isinstance(texts, (str, Mapping)):
        documents = general_texts(texts, "background_statistics texts")
    else:
        rows = [] if isinstance(texts, (bytes, bytearray)) else [t.get("text") if isinstance(t, Mapping) else t for t in texts]
        documents = [t for t in rows if isinstance(t, str) and t.strip()]
        if not documents:
            raise SmfError("background_statistics: texts holds no text; give documents (strings), a file, or a source name such as 'docstrings'")
    chunks: list[Encoded] = (text_chunks if pack else document_sequences)(documents, tokenizer, max_length)
    needed = len(chunks) if batches is None else batches * batch_size
    if len(chunks) < needed:
        made = f"{len(chunks)} sequences of {max_length} tokens" if pack else f"{len(chunks)} documents"
        raise SmfError(f"background_statistics: the texts give {made}; {batches} batches of {batch_size} need {needed}: "
                       "give more text or fewer batches (batches=None takes them all)")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return collect_background(model, [collate(chunks[i : i + batch_size], pad) for i in range(0, needed, batch_size)],
                              progress=progress, mixed_precision=mixed_precision)


def load(name: str | os.PathLike | None = None, *, device: str = "cpu") -> tuple[nn.Module, Any]:
    """(model, tokenizer) of `name`: a folder smf or a Trainer with `SmfOptimizer` saved (memory, a run's delta,
    a LoRA adapter), a hub id, or None for the offline default model (SmolLM2-135M-Instruct). In eval mode, fp32."""
    model, tokenizer = load_model(name, device=device)
    return install_save(model), tokenizer


def export(model: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Write `model` (a folder smf loads, a run folder, a hub id) to the new folder `out`, which loads by itself
    (with memory: `AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)`); checked against the
    source's logits before it is kept. Returns sizes and the check, as `smf export` prints them."""
    return _export(model, out, say=lambda line: None)


def evaluate_tasks(model: nn.Module, tokenizer, tasks: Sequence[str | Mapping[str, Any]], *, limit: int | None = None,
             progress: bool = False) -> dict:
    """Score `model` on named tasks as `smf eval` does (e.g. ["capitals", "pydoc"], or {"name": ..., options});
    `limit` caps the items of each task. Returns {"tasks": {label: {metric: value, ..., "records": [...]}}}."""
    return _evaluate(model, tokenizer, list(tasks), limit=limit, progress=progress)


def learn(notes: str | os.PathLike, out: str | os.PathLike, *, model: str | os.PathLike | None = None,
          settings: Mapping[str, Any] | None = None, progress: bool = False) -> dict:
    """`smf learn`: teach the facts in `notes` (.txt or .md, a statement a line or bullet; or .jsonl) to `model`
    (None: the offline default; a folder `learn` wrote: a later sitting) and write the model to the new folder
    `out`. `settings`: LearnConfig's (the flags of `smf learn --help`, e.g. {"top_t": 1000}). Returns the summary."""
    config = LearnConfig.from_dict(dict(settings or {}), where="learn settings")
    return _learn(Path(notes), Path(out), model=None if model is None else str(model), config=config, progress=progress,
                  say=lambda line: None)


def ask(model: nn.Module, tokenizer, question: str, *, max_new_tokens: int = 128) -> str:
    """The model's greedy answer to one question, through its chat template (as `smf ask`)."""
    return answer(model, tokenizer, [{"role": "user", "content": question}], max_new_tokens=max_new_tokens)
