"""Questions about made-up subjects: a question's subject (a capitalised name inside it) swapped for names
that exist nowhere, so the model's answer to them is its answer to the relation, not to a subject it
knows. `smf learn`'s anchors (smf.use.anchors) and SMF's study anchors (smf.methods.smf) ask them.
"""

from __future__ import annotations

import random
import re

SYLLABLES = ("bra", "dor", "vel", "kin", "mar", "tos", "lun", "gar", "fen", "ril", "sa", "to", "mi", "ro", "nal", "ber",
             "qua", "lis", "hem", "zo", "tar", "wen", "pol", "dru")


def subject(question: str) -> tuple[int, int] | None:
    """The question's subject as (start, end) character offsets: the first run of capitalised words that do not
    start a sentence (the first word, or one after a colon or a line break: "Question: Which ..."), or a word with a
    digit or hyphen; None without one."""
    span: list[int] | None = None
    for k, word in enumerate(re.finditer(r"[\w'-]+", question)):
        text = word.group().removesuffix("'s")
        starts = k == 0 or bool(re.search(r"(:|\n)\s*$", question[: word.start()]))  # a sentence's first word
        rare = (not starts and text[:1].isupper()) or bool(re.search(r"\d|-", text))
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
