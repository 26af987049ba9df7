"""Anchors and kept answers: questions about made-up subjects, answered by the model, whose reads a sitting
leaves alone (anchors) and whose answers its training keeps (keep, keep_general: a `Keep` term)."""

from __future__ import annotations

import contextlib

from smf.data.docstrings import docstring_questions
from smf.data.types import TrainExample
from smf.memory import memory_reading_zeros
from smf.train.keep import Keep
from smf.data.anchors import anchor_questions
from smf.use.anchors import anchor_examples
from smf.use.learn.config import LearnConfig
from smf.use.learn.facts import Fact


def anchor_set(model, tokenizer, facts: list[Fact], n: int, seed: int, say, use: str):
    """(questions, examples): `n` anchors per question with a subject (smf.use.anchors), answered by `model`; both
    empty, said, when there are none."""
    questions = anchor_questions([f.question for f in facts if f.question is not None], n, seed=seed)
    anchors = anchor_examples(model, tokenizer, questions)
    if not anchors:
        say("no question names a subject to swap (a capitalised name after its first word), or the model answered none "
            f"of them: nothing {use}")
    return questions, anchors


def kept_answers(model, tokenizer, facts: list[Fact], config: LearnConfig, earlier: list[TrainExample], say):
    """(Keep or None, the kept examples): the answers of the model before any sitting (keep_from base: its memory
    reading zeros; after the `earlier` sittings' kept answers) or of `model` as it is (start) to this
    sitting's anchors (keep) and general questions (keep_general), as a kept-output term for training
    (smf.train.keep); (None, []) without any."""
    kept, said = [], [f"{len(earlier)} earlier sittings' question(s)"] if earlier else []
    batch = config.train.batch_size
    with memory_reading_zeros(model) if config.keep_from == "base" else contextlib.nullcontext(model):
        if config.keep:
            questions, anchors = anchor_set(model, tokenizer, facts, config.keep, config.train.seed + 1, say, "to keep")
            kept += anchors
            if anchors:
                said.append(f"{len(anchors)} question(s) about made-up subjects (such as \"{questions[0]}\")")
        if config.keep_general:
            pairs = docstring_questions("background")
            questions = [q for q, _ in pairs[:: max(1, len(pairs) // config.keep_general)][: config.keep_general]]
            general = anchor_examples(model, tokenizer, questions)
            kept += general
            said.append(f"{len(general)} general question(s) (such as \"{questions[0]}\")")
        kept = list(dict.fromkeys(earlier + kept))  # a question asked again is kept once
        if not kept:
            return None, []
        keep = Keep.of(model, tokenizer, kept, config.train.max_length, config.keep_weight, batch=batch,
                       most=config.keep_per_step, divergence=config.keep_divergence)
    whose = "the base model's (its memory reading zeros)" if config.keep_from == "base" else "the model's"
    turns = f", {keep.per_step * batch} a step in turn" if keep.in_turn else ""
    how = ", symmetric KL" if keep.divergence == "symmetric" else ""
    say(f"keeping {whose} answers to {' and '.join(said)}: {keep.positions} tokens, weight {config.keep_weight:g}{how}{turns}")
    return keep, kept
