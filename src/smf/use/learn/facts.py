"""Reading facts: a .txt file of statements, or .jsonl/.json rows of statements and questions with answers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smf.data.rows import lines, read_rows_file, read_text
from smf.errors import SmfError


@dataclass(frozen=True)
class Fact:
    """One thing to learn: a statement, or a question with its answer."""

    text: str | None = None
    question: str | None = None
    answer: str | None = None
    lead: str = ""  # the answer's first words, given as context and not taught (answers: lead)


def read_facts(path: Path) -> list[Fact]:
    """The facts of a .txt file (one statement per line) or .jsonl/.json file ({"text"}, {"question", "answer"}
    or {"prompt", "target"} rows)."""
    path = Path(path)
    if not path.is_file():
        raise SmfError(f"{path}: file not found; give a .txt (one statement per line) or .jsonl file of facts")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        facts = [Fact(text=line.strip()) for line in lines(read_text(path)) if line.strip()]
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
        raise SmfError(f"{path}: facts are a .txt, .jsonl or .json file, not {path.suffix or 'a file without a suffix'}")
    if not facts:
        raise SmfError(f"{path}: no facts in the file")
    return facts
