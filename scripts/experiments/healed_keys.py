"""Trained keys for `smf learn`: heal a fresh memory on general text, then zero its values.

The retrofit's keys and query projections are random and never trained, so questions that
share a relation ("the currency of … is the") read mostly the same rows whatever the entity
(README, "Where the damage comes from"). Healing trains every memory parameter on general
text; setting the values back to zero afterwards keeps the trained keys, queries and gates
while the model again answers exactly as the base (additive memory adds zero). The folder
this writes carries background statistics on the same chat-wrapped text as `smf learn`'s, so
`smf learn --model FOLDER` (or learn_damage.py / learn_check.py with model=FOLDER) teaches on it.

    .venv/bin/python scripts/experiments/healed_keys.py OUT_DIR [--steps 150] [--keep-values]

Writes OUT_DIR/model (the folder to learn on) and OUT_DIR/healed_keys.json (settings, the heal's
loss, how far the keys moved, and whether the zeroed model's logits equal the base's).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    from smf.io import write_json_atomic
    from smf.memory import MemoryConfig, retrofit, save_retrofitted
    from smf.memory.retrofit import load_retrofitted, memory_layers
    from smf.methods.heal import HealConfig
    from smf.models import load_model, load_tokenizer
    from smf.selection import BackgroundConfig
    from smf.train.stages import background_statistics, heal
    from smf.use.learn import chat_background, default_layers

    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--background", default="pydoc", help="general text, chat-wrapped as smf learn does")
    parser.add_argument("--slots", type=int, default=65536)
    parser.add_argument("--keep-values", action="store_true", help="keep the healed values (the model no longer equals the base)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    base, tokenizer = load_model()
    memory = MemoryConfig(layers=default_layers(base.config.num_hidden_layers), slots=args.slots, heads=4, topk=16, key_dim=256, seed=0)
    probe = tokenizer("The capital of France is Paris. The currency of Japan is the yen.", return_tensors="pt")
    with torch.no_grad():
        base_logits = base(**probe).logits
    retrofit(base, memory)
    start = save_retrofitted(base, tokenizer, out / "retrofitted", overwrite=True)
    keys0 = {i: m.keys.detach().clone() for i, m in memory_layers(base).items()}
    del base
    data = chat_background(args.background, tokenizer, out / "background.jsonl")
    t0 = time.time()
    result = heal(start, HealConfig(data=data, steps=args.steps, lr=args.lr, batch_size=args.batch_size, max_length=args.max_length),
                  out / "heal", progress=True)
    heal_seconds = time.time() - t0
    model = load_retrofitted(out / "heal" / "model")
    moved = {}
    for i, m in memory_layers(model).items():
        moved[i] = float((m.keys.detach() - keys0[i]).norm() / keys0[i].norm())
        if not args.keep_values:
            with torch.no_grad():
                m.values.zero_()
    with torch.no_grad():
        logits = model(**probe).logits
    folder = save_retrofitted(model, load_tokenizer(out / "heal" / "model"), out / "model", overwrite=True)
    background_statistics(folder, BackgroundConfig(data=data, batches=16, batch_size=8, max_length=128), progress=True)
    report = {
        "memory": memory.to_dict(),
        "heal": {"steps": args.steps, "lr": args.lr, "batch_size": args.batch_size, "max_length": args.max_length,
                 "background": args.background, "seconds": round(heal_seconds, 1),
                 "first_loss": result.summary["first_loss"], "final_loss": result.summary["final_loss"]},
        "keys_moved_relative": moved,
        "values": "kept" if args.keep_values else "zeroed",
        "max_abs_logit_change_vs_base": float((logits - base_logits).abs().max()),
    }
    write_json_atomic(out / "healed_keys.json", report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
