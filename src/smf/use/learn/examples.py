"""Building training examples: questions answered by the person's statements (answers: sentence or lead),
more questions about their subjects (ask_about), and each fact as a chat turn or plain text."""

from __future__ import annotations

import re
from dataclasses import replace

from smf.data.types import TrainExample
from smf.use.anchors import subject
from smf.use.chat import render
from smf.use.learn.config import ABOUT
from smf.use.learn.facts import Fact

_COMMON = {"what", "which", "when", "where", "whom", "whose", "does", "that", "this", "with", "from", "have", "were", "they"}


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def answered_by_statements(facts: list[Fact], lead: bool = False) -> list[Fact]:
    """The facts to teach when answers are taught as sentences.

    A question whose answer occurs (as whole words) in a given statement that shares another
    word of four letters or more (not a question word) with the question is taught answered by that statement
    (the one sharing most words; the nearest in the file on a tie), and the statement is not
    taught again on its own. Other facts are kept as they are. Why: a chat model answers in
    sentences that carry its recall ("The capital of China is Beijing."); taught one- to
    three-word answers, it answers every question that way and mostly wrongly (measured in
    studies/learn-check/README.md, "Where the damage comes from").
    """
    statements = {j: _words(f.text) for j, f in enumerate(facts) if f.text is not None}
    holding: dict[str, list[int]] = {}  # word -> the statements that hold it, in file order
    for j, words in statements.items():
        for w in dict.fromkeys(words):
            holding.setdefault(w, []).append(j)
    answered: dict[int, int] = {}  # question's index -> its statement's index
    for i, fact in enumerate(facts):
        if fact.question is None:
            continue
        answer, asked = _words(fact.answer), set(_words(fact.question))
        candidates = holding.get(answer[0], []) if answer else []  # only these can hold the whole answer
        shared = {j: len({w for w in statements[j] if len(w) >= 4} & asked - set(answer) - _COMMON) for j in candidates
                  if _contains(statements[j], answer)}
        best = max((j for j in shared if shared[j] > 0), key=lambda j: (shared[j], -abs(j - i)), default=None)
        if best is not None:
            answered[i] = best
    used = set(answered.values())
    paired = {i: Fact(question=facts[i].question, answer=facts[j].text) for i, j in answered.items()}
    if lead:  # --answers lead: the statement's words before the answer become context
        paired = {i: given_lead(f, facts[i].answer) for i, f in paired.items()}
    return [paired.get(i, f) for i, f in enumerate(facts) if i not in used]


def about_questions(paired: list[Fact], n: int) -> list[Fact]:
    """`n` questions about the subject of each question in `paired` (answered by a statement) that names one
    (smf.use.anchors.subject: "Oshu" in "What is the capital of Oshu?"), each answered as that question is:
    "Tell me about Oshu." → "The capital of the island of Oshu is Kelbrin." Why: taught under one question, the
    answer is read at positions whose memory reads hang on that question's words, and the same fact asked in other
    words reads other rows (studies/learn-check/README.md); the same answer after other questions about the
    subject trains the rows that the answer's own words read."""
    out = []
    for fact in paired if n else []:
        where = subject(fact.question)
        if where is not None:
            name = fact.question[where[0] : where[1]]
            out += [replace(fact, question=form.format(name)) for form in ABOUT[:n]]
    return out


def given_lead(fact: Fact, short: str | None) -> Fact:
    """A question answered by a statement, split where its short answer starts: the words before become the lead
    (context, not taught), the rest the answer. Other facts, and a statement that starts with the answer, as they are."""
    if fact.question is None or short is None or fact.answer == short:
        return fact
    found = re.search(r"(?<!\w)" + re.escape(short) + r"(?!\w)", fact.answer, flags=re.IGNORECASE)
    if found is None or not fact.answer[: found.start()].strip():
        return fact
    cut = len(fact.answer[: found.start()].rstrip())
    return Fact(question=fact.question, answer=fact.answer[cut:], lead=fact.answer[:cut])


def _contains(words: list[str], part: list[str]) -> bool:
    n = len(part)
    return n > 0 and any(words[k : k + n] == part for k in range(len(words) - n + 1))


def examples(facts: list[Fact], tokenizer, stop: bool = True) -> list[TrainExample]:
    """Training examples: questions through the chat template (loss on the answer, and with `stop` on the end-of-turn
    token after it), statements as text."""
    out = []
    for fact in facts:
        if fact.question is not None:
            eos = tokenizer.eos_token if stop and getattr(tokenizer, "chat_template", None) and tokenizer.eos_token else ""
            out.append(TrainExample(render(tokenizer, [{"role": "user", "content": fact.question}]) + fact.lead, fact.answer + eos))
        else:
            out.append(TrainExample("", fact.text))
    return out
