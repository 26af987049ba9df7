"""Why a fact taught in some wordings is not answered in another: which memory rows the wordings share.

An SMF sitting changes only memory rows its items read. A question in new words can recall a fact only
through rows it reads too, at the place that matters: the token before the answer, where the model
chooses the answer's first word. This script measures, on the retrofitted offline model before any
training (what a token reads depends only on the keys and the model, not on the values a sitting
trains), for each fact of a facts folder (first.jsonl with first_heldout.jsonl, a held-out wording of
each question), at each memory layer, over the 64 rows (heads × top-k) read at that token:

- same reply: the person's question and the held-out wording, each answered by the fact's statement;
  the share of the held-out wording's rows that the taught one reads too;
- own words: the held-out wording answered in its own words (smf.use.learn.study.echo, as the model
  answers a question: "What is the birthplace of X?" → "The birthplace of X is ..."); the share of its
  rows that any of the fact's study items reads at its answer (`covered`);
- of those covered rows, the share the same study items read too when the fact's subject is swapped
  for a made-up name (smf.data.anchors): rows any subject would read in that sentence, which is what the
  kept answers and anchors of `smf learn` keep from training;
- another fact: the share of a held-out wording's rows read by the next fact's taught wording (chance);
- answer first: the same for a reply that starts with the answer (`smf learn --answer-in answer`), read at
  the reply's opening: the share of the held-out wording's rows the taught wording reads, and of those the
  share the taught wording with a made-up subject reads too.

    python studies/learn-check/rows_shared.py studies/learn-check/results/rows_shared.json [--facts DIR]

writes its record and prints `markdown(record, 2)`, the page's block (scripts/publish_results.py).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VALIDATION = ROOT / "studies" / "learn-check" / "validation"


def measure(facts_dir: Path, per_fact: int = 8, seed: int = 0) -> dict:
    import torch

    from smf.data.anchors import made_up, subject
    from smf.data.rows import read_rows_file
    from smf.memory.config import MemoryConfig
    from smf.memory.retrofit import memory_layers, retrofit
    from smf.models import load_model, resolve_model
    from smf.use.learn.facts import read_facts
    from smf.use.learn.study import echo, study_items

    model, tokenizer = load_model(resolve_model(None))
    retrofit(model, MemoryConfig().at_depth(model.config.num_hidden_layers))
    memories = memory_layers(model)
    for memory in memories.values():
        memory.record = True
    model.eval()

    def read(question: str | None, reply: str, answer: str) -> dict[int, set[int]]:
        """Per layer, the rows read at the token before `answer` in `reply` (after the chat's `question`)."""
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                               tokenize=False) if question is not None else ""
        at = reply.lower().find(answer.lower())
        ids = tokenizer(prompt + reply[: max(at, 0)].rstrip(), add_special_tokens=False)["input_ids"]
        if not ids:
            return {i: set() for i in memories}
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
        return {i: set(m.last_rows[-1].tolist()) for i, m in memories.items()}

    rng = random.Random(seed)

    def swapped(question: str, *texts: str) -> tuple[str, ...] | None:
        """The question and `texts` with the question's subject swapped for one made-up name (None without a subject)."""
        where = subject(question)
        if where is None:
            return None
        name, new = question[where[0]:where[1]], made_up(rng, question)
        return tuple(t.replace(name, new) for t in (question, *texts))

    facts = read_facts(facts_dir / "first.jsonl")
    held = read_rows_file(facts_dir / "first_heldout.jsonl", hint='{"question", "answer"}')
    questions = [f for f in facts if f.question is not None]
    statements = [f.text for f in facts if f.text is not None]
    items = study_items(facts)
    per: list[dict] = []
    taught_rows = []
    for fact, statement, other in zip(questions, statements, held):
        answer = fact.answer
        taught = read(fact.question, statement, answer)
        taught_rows.append(taught)
        opening, opening_held = read(fact.question, "", ""), read(other["question"], "", "")
        other_subject = swapped(fact.question)
        opening_swapped = read(other_subject[0], "", "") if other_subject else {i: set() for i in memories}
        same = read(other["question"], statement, answer)
        own = read(other["question"], echo(other["question"], answer) or statement, answer)
        union = {i: set() for i in memories}
        any_subject = {i: set() for i in memories}
        for item in [i for i in items if i.fact == statement][:per_fact]:
            short = item.short or answer
            reply = item.answer if item.question is not None else item.text  # a question's reply, or a text
            for i, rows in read(item.question, reply, short).items():
                union[i] |= rows
            other_subject = swapped(item.question, item.answer) if item.question is not None else None
            if other_subject:
                for i, rows in read(*other_subject, short).items():
                    any_subject[i] |= rows
        per.append({"question": other["question"], "layers": {
            str(i): {"same_reply": len(taught[i] & same[i]), "own_words": len(own[i]), "covered": len(own[i] & union[i]),
                     "covered_any_subject": len(own[i] & union[i] & any_subject[i]),
                     "first_shared": len(opening[i] & opening_held[i]),
                     "first_any_subject": len(opening[i] & opening_held[i] & opening_swapped[i])} for i in memories}})
    for k, record in enumerate(per):  # chance: the next fact's taught wording
        nxt = taught_rows[(k + 1) % len(per)]
        for i in memories:
            record["layers"][str(i)]["another_fact"] = len(nxt[i] & taught_rows[k][i])
    memory = next(iter(memories.values()))
    reads = memory.heads * memory.topk
    return {"facts": str(facts_dir.relative_to(ROOT)) if facts_dir.is_relative_to(ROOT) else str(facts_dir),
            "reads_per_token": reads, "per_fact": per_fact, "layers": [str(i) for i in memories], "per": per}


def markdown(record: dict, level: int) -> str:
    reads, n = record["reads_per_token"], len(record["per"])
    lines = ["| layer | same reply, other wording | own words: covered by the study | of those, read with any subject | "
             "another fact | answer first: other wording | of those, read with any subject |",
             "|---|---|---|---|---|---|---|"]
    for layer in record["layers"]:
        total = {key: sum(p["layers"][layer][key] for p in record["per"]) for key in
                 ("same_reply", "own_words", "covered", "covered_any_subject", "another_fact", "first_shared",
                  "first_any_subject")}
        lines.append(f"| {layer} | {100 * total['same_reply'] / (reads * n):.0f} % | "
                     f"{100 * total['covered'] / max(total['own_words'], 1):.0f} % | "
                     f"{100 * total['covered_any_subject'] / max(total['covered'], 1):.0f} % | "
                     f"{100 * total['another_fact'] / (reads * n):.0f} % | "
                     f"{100 * total['first_shared'] / (reads * n):.0f} % | "
                     f"{100 * total['first_any_subject'] / max(total['first_shared'], 1):.0f} % |")
    lines.append("")
    lines.append(f"Rows read at the token before the answer ({reads} a token: heads × top-k), summed over the {n} facts "
                 f"of {record['facts']}; the study is the first {record['per_fact']} items of each fact.")
    return "\n".join(lines)


def main() -> None:
    from smf.io import write_json_atomic

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--facts", type=Path, default=VALIDATION)
    args = parser.parse_args()
    record = measure(args.facts.resolve())
    write_json_atomic(args.out, record)
    print(markdown(record, 2))


if __name__ == "__main__":
    main()
