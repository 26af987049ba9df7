"""Training examples from facts and study items: questions through the chat template, statements as text
(with the loss on their answer span when one is given)."""

from __future__ import annotations

import re

from smf.data.types import TrainExample
from smf.use.chat import render
from smf.use.learn.facts import Fact


def examples(facts: list[Fact], tokenizer, stop: bool = True) -> list[TrainExample]:
    """Training examples: questions through the chat template (loss on the answer, and with `stop` on the end-of-turn
    token after it); statements as text, the loss from their answer span on when the fact names one (a cloze),
    else on the whole statement."""
    out = []
    for fact in facts:
        if fact.question is not None:
            eos = tokenizer.eos_token if stop and getattr(tokenizer, "chat_template", None) and tokenizer.eos_token else ""
            out.append(TrainExample(render(tokenizer, [{"role": "user", "content": fact.question}]) + fact.lead, fact.answer + eos))
            continue
        found = re.search(r"(?<!\w)" + re.escape(fact.answer) + r"(?!\w)", fact.text) if fact.answer else None
        if found is not None and found.start() > 0:
            cut = len(fact.text[: found.start()].rstrip())
            out.append(TrainExample(fact.text[:cut], fact.text[cut:]))
        else:
            out.append(TrainExample("", fact.text))
    return out
