"""Where `smf learn`'s damage to other chat answers comes from: one sitting, then where the probe questions read.

Teaches tests/fixtures/user_facts/first.jsonl with the given `smf learn` settings (sitting 1 of
learn_check.py), then asks the taught questions, the new wordings, and a quarter of the world
probe (25 questions of each kind) and the capitals probe. For every probe question and every
memory layer it also measures, at the position that predicts the answer's first token:
  trained weight: the share of the memory's read weight (softmax over top-k, averaged over
                  heads) that falls on rows the training changed;
  memory/ffn:     the norm of the memory's output over the norm of the layer's FFN output.
The same two numbers on the taught questions say how much the facts' own reads use those rows.
Run: .venv/bin/python studies/learn-check/learn_damage.py OUT_DIR [KEY=VALUE ...]   (about 5 min)
KEY=VALUE: LearnConfig settings (answers=sentence|as-given among them), background=... as in
learn_check.py, model=FOLDER (a model with memory and background statistics to teach, e.g. from
healed_keys.py), and answers=statements: the statements alone, no question rows. The JSON files in
studies/learn-check/results/learn_damage/ were made before `smf learn --answers` existed, with the fixture
rewritten as a file instead; their "facts" field names it: qa_sentence.jsonl is today's
answers=sentence (the same examples), statements_only.jsonl answers=statements, first.jsonl
answers=as-given. base.json holds the base model on the same probes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from learn_check import FACTS, score  # this folder: Python puts a script's own folder on sys.path


def reads(model, tokenizer, questions: list[str], changed: dict[int, torch.Tensor]) -> dict:
    """Per memory layer: mean trained weight and mean memory/ffn norm ratio at the answer position."""
    from smf.memory.retrofit import decoder_layers, memory_layers
    from smf.use.chat import render

    layers = {i: decoder_layers(model)[i].mlp for i in memory_layers(model)}
    seen: dict[int, list] = {i: [] for i in layers}
    hooks = []
    for i, mlp in layers.items():
        def hook(module, args, out, i=i):
            x = args[0][:, -1:]  # the position that predicts the answer
            mem = module.memory
            rows, weights = mem.lookup(mem.normalize(x.reshape(-1, x.shape[-1])))
            hit = changed[i][rows].to(weights.dtype)  # (1, heads, k)
            share = float((weights * hit).sum(-1).mean())
            ratio = float(mem(x).norm() / module.ffn(x).norm().clamp_min(1e-12))
            seen[i].append((share, ratio))
        hooks.append(mlp.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for q in questions:
                ids = tokenizer(render(tokenizer, [{"role": "user", "content": q}]), return_tensors="pt", add_special_tokens=False)
                model(**ids)
    finally:
        for h in hooks:
            h.remove()
    return {i: {"trained_weight": sum(s for s, _ in v) / len(v), "memory_over_ffn": sum(r for _, r in v) / len(v)} for i, v in seen.items()}


def main(folder: Path, settings: dict) -> None:
    import yaml

    from smf.data.world import world_rows
    from smf.evaluate import evaluate
    from smf.memory.retrofit import memory_layers
    from smf.models import load_model
    from smf.use.learn import LearnConfig, learn

    background = settings.get("background", "pydoc")  # a LearnConfig shortcut: stays in settings
    model_dir = settings.pop("model", None)  # a folder with memory and background statistics (healed_keys.py)
    facts = Path(settings.pop("facts", FACTS / "first.jsonl"))
    statements = settings.get("answers") == "statements" and settings.pop("answers")
    config = LearnConfig.from_dict({k: yaml.safe_load(v) for k, v in settings.items()}, where="settings")
    folder.mkdir(parents=True, exist_ok=True)
    if statements:
        rows = [r for r in map(json.loads, filter(str.strip, facts.read_text().splitlines())) if "text" in r]
        facts = folder / "statements_only.jsonl"
        facts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    learn(facts, folder / "sitting1", model=model_dir, config=config, progress=False, say=lambda s: None)
    model, tokenizer = load_model(folder / "sitting1")
    model.eval()
    changed = {i: mem.values.detach().abs().sum(-1) > 0 for i, mem in memory_layers(model).items()}
    norms = {i: mem.values.detach().norm(dim=-1) for i, mem in memory_layers(model).items()}
    taught = score(model, tokenizer, FACTS / "first.jsonl")
    heldout = score(model, tokenizer, FACTS / "first_heldout.jsonl")
    tasks = evaluate(model, tokenizer, [{"name": "world", "per_kind": 25}, "capitals"], progress=False)["tasks"]
    world = [r["question"] for r in world_rows("test", 25)]
    report = {
        "settings": config.to_dict() | {"background": background, "facts": str(facts), "model": model_dir},
        "taught": taught[:2], "heldout": heldout[:2],
        "probes": {n: t["headline"]["value"] for n, t in tasks.items()},
        "rows_changed": {i: int(c.sum()) for i, c in changed.items()},
        "changed_row_norm": {i: [float(norms[i][c].mean()), float(norms[i][c].max())] for i, c in changed.items()},
        "reads_taught": reads(model, tokenizer, [a["question"] for a in taught[2]], changed),
        "reads_world": reads(model, tokenizer, world, changed),
        "answers": taught[2][:5] + heldout[2][:5],
        "world_answers": [{"question": q, "said": r["output"]} for q, r in zip(world[::10], tasks["world"]["records"][::10])],
    }
    (folder / "learn_damage.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("settings", "taught", "heldout", "probes", "rows_changed", "changed_row_norm",
                                             "reads_taught", "reads_world")}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: learn_damage.py OUT_DIR [KEY=VALUE ...]")
    main(Path(sys.argv[1]), dict(arg.split("=", 1) for arg in sys.argv[2:]))
