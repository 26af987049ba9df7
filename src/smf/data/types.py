"""The items that datasets produce and evaluation and training consume."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MCQItem:
    """A multiple-choice question (MedMCQA schema once parsed).

    `answer` is the 0-based index of the correct choice in `choices`.
    """

    id: str
    question: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class QAItem:
    """An open question answered by generation; any alias counts as correct."""

    id: str
    question: str
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class Document:
    """A document scored by rolling log-likelihood.

    `text` is the raw page (words and bytes are counted on it); `scored` is what the
    model reads (e.g. lm-eval's WikiText detokenization), equal to `text` by default.
    """

    id: str
    text: str
    scored: str | None = None

    @property
    def scored_text(self) -> str:
        return self.text if self.scored is None else self.scored


@dataclass(frozen=True)
class TrainExample:
    """One training sequence: `prompt` is context (no loss), `target` carries the loss.

    A plain statement is `TrainExample(prompt="", target=statement)`.
    """

    prompt: str
    target: str
