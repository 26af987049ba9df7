"""Why `smf learn`'s kept answers spare the capitals probe on some seeds and not others: what they constrain.

The kept-answer term (smf.train.keep) holds the base model's answers to questions about made-up subjects ("What is
the capital of Mirilber?"). Its gradient reaches a trained row only where a kept answer reads that row, and it
holds only the distributions along those answers. After one sitting (sitting 1 of learn_check.py, today's
defaults, or a folder given with model=) this measures, against the capitals probe (60 real-country questions,
each with the base model's own greedy answer, its first sentence, as the target):

  rows:    per memory layer, of the rows the sitting changed that the capitals examples read, the share the kept
           answers read, and the share the taught facts' questions read (through the chat template, with the short
           answer as target): at any real token (the chat template's shared tokens among them), and at the
           positions that predict an answer token only;
  drift:   the mean per-token KL(base ‖ taught) along the answers' tokens: the kept answers (what the term holds)
           and the capitals answers (what the probe asks);
  entropy: the base model's mean next-token entropy along the same tokens (nats): how sharply base answers.

Run: .venv/bin/python scripts/experiments/kept_coverage.py OUT_DIR [seed=N] [model=FOLDER] [KEY=VALUE ...]
(about 20 min on 2 CPU cores with training, 3 min with model=; KEY=VALUE are `smf learn` settings as in learn_check.py). Writes
OUT_DIR/kept_coverage.json and prints it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learn_check import FACTS  # noqa: E402


def along(model, tokenizer, examples, max_length: int) -> torch.Tensor:
    """log p (positions, vocab) of the next token along every example's target, in order."""
    from smf.train.keep import kept_logprobs
    from smf.train.loop import collate, encode_examples

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    data = encode_examples(examples, tokenizer, max_length)
    model.eval()
    with torch.no_grad():
        return torch.cat([kept_logprobs(model, collate(data[i : i + 8], pad)) for i in range(0, len(data), 8)])


def drift(base_logp: torch.Tensor, taught_logp: torch.Tensor) -> dict:
    """Mean per-token KL(base ‖ taught) and base entropy, in nats."""
    p = base_logp.exp()
    return {"kl_base_taught": float((p * (base_logp - taught_logp)).sum(-1).mean()),
            "base_entropy": float(-(p * base_logp).sum(-1).mean()), "tokens": len(p)}


def read_rows(model, tokenizer, examples, max_length: int, answers_only: bool = False) -> dict[int, torch.Tensor]:
    """Per memory layer: (slots,) bool, the rows any real token of any example reads; `answers_only`: only the
    positions that predict a target token (those the kept term and the probe score)."""
    from smf.memory.retrofit import memory_layers, set_recording
    from smf.train.loop import IGNORE, collate, encode_examples

    memories = memory_layers(model)
    read = {i: torch.zeros(m.slots, dtype=torch.bool) for i, m in memories.items()}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    set_recording(model, True)
    try:
        with torch.no_grad():
            for e in encode_examples(examples, tokenizer, max_length):
                batch = collate([e], pad)
                mask = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
                mask[:, :-1] = batch["labels"][:, 1:] != IGNORE
                for m in memories.values():
                    m.record_mask = mask if answers_only else None
                model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                for i, m in memories.items():
                    read[i] |= m.read_counts().cpu() > 0
    finally:
        for m in memories.values():
            m.record_mask = None
        set_recording(model, False)
    return read


def main(folder: Path, settings: dict) -> None:
    import yaml

    from smf.data.capitals import capitals_rows
    from smf.data.types import TrainExample
    from smf.memory.retrofit import memory_layers
    from smf.models import load_model
    from smf.use.anchors import anchor_examples
    from smf.use.chat import render
    from smf.use.learn import LearnConfig, learn, read_kept

    model_dir = settings.pop("model", None)
    config = LearnConfig.from_dict({k: yaml.safe_load(v) for k, v in settings.items()}, where="settings")
    folder.mkdir(parents=True, exist_ok=True)
    if model_dir is None:
        model_dir = folder / "sitting1"
        learn(FACTS / "first.jsonl", model_dir, background="pydoc", config=config, progress=False, say=lambda s: None)
    model_dir = Path(model_dir)
    taught, tokenizer = load_model(model_dir)
    base, _ = load_model()
    kept = read_kept(model_dir)
    capitals = anchor_examples(base, tokenizer, [r["question"] for r in capitals_rows(60)])
    facts = [r for r in map(json.loads, filter(str.strip, (FACTS / "first.jsonl").read_text().splitlines())) if "question" in r]
    questions = [TrainExample(render(tokenizer, [{"role": "user", "content": r["question"]}]), r["answer"]) for r in facts]

    changed = {i: mem.values.detach().abs().sum(-1) > 0 for i, mem in memory_layers(taught).items()}
    layers = {}
    for where, answers_only in (("all_tokens", False), ("answer_positions", True)):
        read = {name: read_rows(taught, tokenizer, examples, config.max_length, answers_only)
                for name, examples in (("capitals", capitals), ("kept", kept), ("facts", questions))}
        for i, c in changed.items():
            probe = read["capitals"][i] & c
            n = int(probe.sum())
            layers.setdefault(i, {"changed": int(c.sum())})[where] = {
                "changed_read_by_capitals": n,
                "share_read_by_kept": round(float((probe & read["kept"][i]).sum()) / n, 3) if n else None,
                "share_read_by_facts_questions": round(float((probe & read["facts"][i]).sum()) / n, 3) if n else None}
    report = {
        "model": str(model_dir), "settings": config.to_dict(),
        "rows": layers,
        "kept_answers": drift(along(base, tokenizer, kept, config.max_length), along(taught, tokenizer, kept, config.max_length)),
        "capitals_answers": drift(along(base, tokenizer, capitals, config.max_length),
                                  along(taught, tokenizer, capitals, config.max_length)),
        "examples": {"kept": [[e.prompt[-80:], e.target] for e in kept[:3]],
                     "capitals": [[e.prompt[-80:], e.target] for e in capitals[:3]]},
    }
    (folder / "kept_coverage.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("rows", "kept_answers", "capitals_answers")}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: kept_coverage.py OUT_DIR [seed=N] [model=FOLDER] [KEY=VALUE ...]")
    main(Path(sys.argv[1]), dict(arg.split("=", 1) for arg in sys.argv[2:]))
