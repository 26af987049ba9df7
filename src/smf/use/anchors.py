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

A subject is the first run of capitalised words that do not start a sentence, or a word with a
digit or hyphen ("Kestrel-9") (smf.data.anchors); a question without one gets no anchor.
"""

from __future__ import annotations

from smf.data.anchors import first_sentence
from smf.data.types import TrainExample
from smf.train.stages import reads_as_documents
from smf.use.chat import answers, render


def anchor_examples(model, tokenizer, questions: list[str], max_new_tokens: int = 32):
    """Anchor questions as training-shaped examples: the question through the chat template, the model's own greedy
    answer (its first sentence) as the target; a question the model answers with nothing is left out. The answers
    are generated in batches (`answers`: the same as one at a time on the offline model's anchors, 7 times faster:
    bench/anchor_answers.py)."""
    turns = [[{"role": "user", "content": q}] for q in questions]
    said = [first_sentence(a) for a in answers(model, tokenizer, turns, max_new_tokens=max_new_tokens)]
    return [TrainExample(render(tokenizer, t), s) for t, s in zip(turns, said) if s]


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
