"""Anchors: a person's questions asked about made-up subjects, whose reads count as background.

Teaching "What is the capital of Oshu?" moves the rows that every question of the relation
reads at its answer ("the capital of … is"), whatever the place, so the model starts to answer
France's capital with the taught one (studies/learn-check/README.md, "Where the damage comes from"). TF-IDF trains the
rows a batch reads that the background seldom reads; a background of general text holds few
such questions, so those shared rows look specific to the facts. An anchor is one of the
person's questions with its subject swapped for a made-up name ("What is the capital of
Mirilber?"), answered by the model itself (greedy, its first sentence). `smf learn` asks N anchors
per question (--anchors, 1 by default) and, for that sitting only, counts every row they read as
read by every document of the background statistics (--anchor-reads exclude, the default): TF-IDF
scores it 0 and the sitting trains only rows that no anchor reads, the rows the taught subject
reads alone (studies/learn-check/README.md, "Rows the anchors read, left out"). `--anchor-reads document` counts each
anchor as one document instead: rows that any subject of the relation reads become common and
score low, but can still be chosen.

A subject is the first run of capitalised words after a question's first word, or a word with a
digit or hyphen ("Kestrel-9"); a question without one gets no anchor.
"""

from __future__ import annotations

import random
import re

from smf.data.types import TrainExample
from smf.train.stages import reads_as_documents
from smf.use.chat import answer, render

SYLLABLES = ("bra", "dor", "vel", "kin", "mar", "tos", "lun", "gar", "fen", "ril", "sa", "to", "mi", "ro", "nal", "ber",
             "qua", "lis", "hem", "zo", "tar", "wen", "pol", "dru")


def subject(question: str) -> tuple[int, int] | None:
    """The question's subject as (start, end) character offsets; None without one."""
    span: list[int] | None = None
    for k, word in enumerate(re.finditer(r"[\w'-]+", question)):
        text = word.group().removesuffix("'s")
        rare = (k > 0 and text[:1].isupper()) or bool(re.search(r"\d|-", text))
        if rare and span is None:
            span = [word.start(), word.start() + len(text)]
        elif rare and span is not None and not question[span[1] : word.start()].strip():
            span[1] = word.start() + len(text)  # the next word of the same run
        elif span is not None:
            break
    return (span[0], span[1]) if span else None


def made_up(rng: random.Random, taken: str) -> str:
    """A capitalised name of 2 or 3 syllables that does not occur in `taken`."""
    while True:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
        if name.lower() not in taken.lower():
            return name


def anchor_questions(questions: list[str], n: int, seed: int = 0) -> list[str]:
    """`n` questions per given question that has a subject, the subject swapped for made-up names."""
    rng, taken, out = random.Random(seed), " ".join(questions), []
    for question in questions:
        where = subject(question)
        if where is None:
            continue
        for _ in range(n):
            out.append(question[: where[0]] + made_up(rng, taken) + question[where[1] :])
    return out


def first_sentence(text: str) -> str:
    """`text` up to its first full stop, question or exclamation mark (all of it without one)."""
    found = re.search(r"[.!?](\s|$)", text)
    return (text[: found.start() + 1] if found else text).strip()


def anchor_examples(model, tokenizer, questions: list[str], max_new_tokens: int = 32):
    """Anchor questions as training-shaped examples: the question through the chat template, the model's own greedy
    answer (its first sentence) as the target; a question the model answers with nothing is left out."""
    out = []
    for question in questions:
        turns = [{"role": "user", "content": question}]
        said = first_sentence(answer(model, tokenizer, turns, max_new_tokens=max_new_tokens))
        if said:
            out.append(TrainExample(render(tokenizer, turns), said))
    return out


def add_anchor_reads(stats, model, tokenizer, examples, max_length: int, protected: dict | None = None,
                     exclude: bool = False):
    """`stats` (BackgroundStats) with the reads of each anchor example added as one document; with `exclude`, every
    row an anchor reads gets df equal to the documents instead, so TF-IDF scores it 0. Rows in `protected`
    ({layer: rows}, from an earlier sitting) keep df equal to the documents, so they still score 0."""
    reads = reads_as_documents(model, tokenizer, examples, max_length)
    stats.add(reads)
    marked = [(layer, df > 0) for layer, df in reads.df.items()] if exclude else []
    marked += list((protected or {}).items())
    for layer, rows in marked:
        stats.df[layer][rows] = stats.batches
    return stats
