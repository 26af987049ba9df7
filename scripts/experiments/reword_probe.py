"""Can the default model reword a person's questions and statements, to teach more wordings from?

Plain text (no chat template), three worked examples of rewording about well-known facts, then
one of the first 8 questions (or statements) of tests/fixtures/user_facts/first.jsonl; the
model's greedy continuation and two samples (temperature 0.8, top-p 0.95), cut at the line's end.
Run: .venv/bin/python scripts/experiments/reword_probe.py   (about 1 min on 2 CPU cores)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "Question": [("Who painted the Mona Lisa?", "Which artist created the painting called the Mona Lisa?"),
                 ("What is the largest ocean on Earth?", "Which ocean on Earth is the biggest?"),
                 ("When did the Berlin Wall fall?", "In what year was the Berlin Wall brought down?")],
    "Sentence": [("The Mona Lisa was painted by Leonardo da Vinci.", "Leonardo da Vinci is the artist who painted the Mona Lisa."),
                 ("The largest ocean on Earth is the Pacific.", "The Pacific is the biggest ocean on Earth."),
                 ("The Berlin Wall fell in 1989.", "In 1989, the Berlin Wall came down.")],
}


def prompt(kind: str, text: str) -> str:
    shots = "".join(f"{kind}: {a}\nRewritten: {b}\n\n" for a, b in EXAMPLES[kind])
    return f"Rewrite each {kind.lower()} in different words, keeping its meaning.\n\n{shots}{kind}: {text}\nRewritten:"


def main() -> None:
    from smf.models import load_model

    model, tokenizer = load_model()
    rows = [json.loads(line) for line in (ROOT / "tests" / "fixtures" / "user_facts" / "first.jsonl").read_text().splitlines()]
    torch.manual_seed(0)
    for kind, key in (("Question", "question"), ("Sentence", "text")):
        for text in [r[key] for r in rows if key in r][:8]:
            ids = tokenizer(prompt(kind, text), return_tensors="pt").input_ids
            outs = []
            with torch.no_grad():
                for k in range(3):
                    sampled = {"do_sample": True, "temperature": 0.8, "top_p": 0.95} if k else {"do_sample": False}
                    out = model.generate(ids, max_new_tokens=30, pad_token_id=tokenizer.eos_token_id, **sampled)
                    outs.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("\n")[0].strip())
            print(json.dumps({"given": text, "rewritten": outs}))


if __name__ == "__main__":
    main()
