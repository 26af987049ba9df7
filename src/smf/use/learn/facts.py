"""Reading facts: a .txt or .md file of statements (a person's notes), or .jsonl/.json rows of statements and
questions with answers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from smf.data.rows import lines, read_rows_file, read_text
from smf.errors import SmfError


#: a fact is a sentence or two: the study rules read it with regular expressions whose time grows with the
#: square of its length, and training keeps 128 tokens of it
MAX_FACT_CHARS = 1000


@dataclass(frozen=True)
class Fact:
    """One thing to learn: a statement, or a question with its answer."""

    text: str | None = None
    question: str | None = None
    answer: str | None = None
    lead: str = ""  # the answer's first words, given as context and not taught (answers: lead)


def note_lines(text: str, markdown: bool) -> list[str]:
    """The statements of a notes file: one per line; in Markdown, headings, rules, code fences and
    tables are skipped and bullets or numbers before a line dropped."""
    out, fenced = [], False
    for line in lines(text):
        line = line.strip()
        if markdown:
            if line.startswith("```"):
                fenced = not fenced
                continue
            if fenced or line.startswith(("#", "|", ">", "<!--")) or re.fullmatch(r"[-*_ ]{3,}", line):
                continue
            line = re.sub(r"^(?:[-*+]|\d+[.)])\s+(?:\[[ xX]\]\s+)?", "", line)
            line = re.sub(r"\*\*|__|`", "", line)
        if line:
            out.append(line)
    return out


def read_facts(path: Path) -> list[Fact]:
    """The facts of a .txt or .md file (one statement per line or bullet) or .jsonl/.json file ({"text"},
    {"question", "answer"} or {"prompt", "target"} rows)."""
    path = Path(path)
    if not path.is_file():
        raise SmfError(f"{path}: file not found; give a .txt or .md (one statement per line) or .jsonl file of facts")
    suffix = path.suffix.lower()
    if suffix in (".txt", ".md"):
        facts = [Fact(text=line) for line in note_lines(read_text(path), markdown=suffix == ".md")]
    elif suffix in (".jsonl", ".json"):
        facts = []
        for n, row in enumerate(read_rows_file(path, hint='facts: {"text"}, {"question", "answer"} or {"prompt", "target"}'), 1):
            question, answer = row.get("question", row.get("prompt")), row.get("answer", row.get("target"))
            if isinstance(question, str) and isinstance(answer, str) and question.strip() and answer.strip():
                facts.append(Fact(question=question.strip(), answer=answer.strip()))
            elif isinstance(row.get("text"), str) and row["text"].strip():
                facts.append(Fact(text=row["text"].strip()))
            else:
                raise SmfError(f'{path}: row {n} needs a "text", or a "question" (or "prompt") with an "answer" (or "target")')
    else:
        raise SmfError(f"{path}: facts are a .txt, .md, .jsonl or .json file, not {path.suffix or 'a file without a suffix'}")
    if not facts:
        raise SmfError(f"{path}: no facts in the file")
    for n, fact in enumerate(facts, 1):
        longest = max(len(t) for t in (fact.text, fact.question, fact.answer) if t is not None)
        if longest > MAX_FACT_CHARS:
            raise SmfError(f"{path}: fact {n} is {longest:,} characters, over {MAX_FACT_CHARS:,}; a fact is a statement "
                           "or a question with its answer: split a long note into one fact per line")
    return facts
