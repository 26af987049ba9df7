"""Background: the chats the background statistics count, this sitting's anchors added to them, and the
protection of what a sitting trained from later sittings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from smf.data.docstrings import question_chats
from smf.data.sources import general_texts
from smf.memory.delta import root_folder
from smf.memory.retrofit import memory_layers
from smf.models import load_model
from smf.selection import BackgroundConfig, BackgroundStats
from smf.train.stages import background_statistics, reads_as_documents
from smf.use.anchors import add_anchor_reads
from smf.use.chat import render
from smf.use.learn.config import QUESTIONS, LearnConfig
from smf.use.learn.examples import examples
from smf.use.learn.facts import Fact
from smf.use.learn.folder import read_protected, write_protected
from smf.use.learn.kept import anchor_set

ASKS = ("Tell me about this.", "What does the documentation say here?", "Can you explain this topic?",
        "What should I know about this?", "Summarise this part of the reference.")


def count_background(memory_dir: Path, config: BackgroundConfig, tokenizer, stage: Path, progress: bool) -> None:
    """The background statistics of the retrofitted model in `memory_dir`, on `config`'s text as chats
    (`chat_background`), each chat its own sequence from its first token, as it is read when used."""
    data = chat_background(config.data, tokenizer, stage / "background.jsonl")
    chats = bool(getattr(tokenizer, "chat_template", None))
    background_statistics(memory_dir, replace(config, data=data, pack=not chats), progress=progress)


def chat_background(spec, tokenizer, path: Path) -> str:
    """General text as the model will be used: each document's paragraphs as answers in chat turns.

    TF-IDF ranks rows by how specific a batch's reads are against the background. Facts are
    taught through the chat template, so a background of plain prose makes the template's own
    rows look specific, and training them changes every answer the model gives in a chat
    (measured: capitals 66.7 → 3.3 % after 20 facts). With the template in every background
    batch those rows have a high document frequency and are not selected. Each chat is its own
    sequence from its first token (BackgroundConfig pack=False), as the facts and every question
    are read: packed into longer sequences, a chat's opening tokens (the system prompt) sit after
    other text and read other rows than they do at the start of a chat, and those rows were
    trained (on the default model 4 to 15 of the 64 each of its first 8 tokens reads at layer 8,
    their values' norms up to 480, on every chat after).

    `spec` = QUESTIONS: chats of short questions and answers instead (smf.data.docstrings.question_chats),
    so that the rows read where the model answers a question are common in the background too. Without a
    chat template `spec` is returned as it is: the text is read plain.
    """
    if not getattr(tokenizer, "chat_template", None):
        return spec
    if spec == QUESTIONS:
        turns = ([t for q, a in chat for t in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
                 for chat in question_chats())
        return _write_rows(path, [{"text": tokenizer.apply_chat_template(t, tokenize=False)} for t in turns])
    rows = []
    for i, text in enumerate(general_texts(spec, "background data")):
        for j, paragraph in enumerate(p.strip() for p in text.split("\n\n") if p.strip()):
            turn = render(tokenizer, [{"role": "user", "content": ASKS[(i + j) % len(ASKS)]}])
            rows.append({"text": turn + paragraph + (tokenizer.eos_token or "")})
    return _write_rows(path, rows)


def _write_rows(path: Path, rows: list[dict]) -> str:
    """The background rows as a .jsonl file the background statistics read; its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def anchored_background(model, tokenizer, memory_dir: Path, facts: list[Fact], config: LearnConfig, say):
    """The background statistics of `memory_dir` with this sitting's anchors added (smf.use.anchors); None without any."""
    questions, anchors = anchor_set(model, tokenizer, facts, config.anchors, config.train.seed, say, "counts as background")
    if not anchors:
        return None
    exclude = config.anchor_reads == "exclude"
    stats = add_anchor_reads(BackgroundStats.load(root_folder(memory_dir)), model, tokenizer, anchors,
                             config.train.max_length, read_protected(memory_dir), exclude=exclude)
    how = "the rows they read are not trained in" if exclude else "count as background for"
    layers = sorted(stats.df)
    zero = " / ".join(f"{int((stats.df[i] == stats.batches).sum()):,}" for i in layers)
    say(f"{len(anchors)} question(s) about made-up subjects (such as \"{questions[0]}\"), answered by the model, "
        f"{how} this sitting (rows at TF-IDF 0: {zero} of {len(stats.df[layers[0]]):,} at layers "
        f"{', '.join(map(str, layers))})")
    return stats


def changed_rows(model, before: Path) -> dict[int, torch.Tensor]:
    """Per memory layer, the value rows of `model` that differ from those of the model in `before`."""
    old = memory_layers(load_model(before)[0])  # on the CPU; the trained model may be on a GPU
    return {i: (m.values.detach().cpu() != old[i].values.detach()).any(-1).nonzero().flatten() for i, m in memory_layers(model).items()}


def protect_rows(model, tokenizer, facts: list[Fact], folder: Path, max_length: int,
                 trained: dict[int, torch.Tensor] | None = None, since: Path | None = None, stop: bool = True) -> int:
    """Add the memory reads of each taught example, through the trained `model`, to the background
    statistics in `folder` as one document each (df counts documents); the documents after.

    `trained` (rows per layer): these rows, and those earlier sittings protected (in the folder `since`
    this sitting started from), get df equal to the documents and are saved as `folder`'s protected rows;
    TF-IDF scores them log(1) = 0, so no later step picks them (smf.selection)."""
    stats = BackgroundStats.load(folder).add(reads_as_documents(model, tokenizer, examples(facts, tokenizer, stop), max_length))
    if trained is not None:
        earlier = read_protected(since)
        protected = {}
        for layer, rows in trained.items():
            rows = torch.cat([earlier.get(layer, rows[:0]), rows]).unique()
            stats.df[layer][rows] = stats.batches
            protected[layer] = rows
        write_protected(folder, protected)
    stats.save(folder)
    return stats.batches
