"""Train smf, lora, full and heal for a few steps; run alone or under `accelerate launch`.

Used by tests/train/test_distributed.py: one process and two processes (gloo) must take the
same steps. Each process writes, per method, OUT/<method>/rank<r>.safetensors (its
trainable weights after training), OUT/<method>/grad<r>.safetensors (the gradients the
first step applies, after the sum over processes; smf: the selected rows only) and
OUT/<method>/rows<r>.json (the rows selection returned at each call, smf only).

    python tests/train/distributed_worker.py --model DIR --out OUT [--methods smf,lora] [--skew-background]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from smf.data.types import TrainExample
from smf.errors import SmfError
from smf.methods import TrainConfig
from smf.methods.base import Method
from smf.methods.smf import SmfMethod
from smf.models import load_model
from smf.optim import selected_gradient
from smf.selection import BackgroundStats, RowSelector
from smf.train import train

SETTINGS = {
    "smf": {"method": "smf", "lr": 0.5, "rule": "tfidf", "top_t": 6},
    "smf-sgd": {"method": "smf", "optimizer": "sgd", "lr": 2.0, "rule": "tfidf", "top_t": 6},
    "smf-micro": {"method": "smf", "optimizer": "adamw_masked", "rule": "kl", "top_t": 6, "select_every": "micro_batch"},
    "smf-dense": {"method": "smf", "optimizer": "adamw_masked", "rule": "tfidf", "top_t": 6},
    "lora": {"method": "lora", "lr": 1e-2, "dropout": 0.0, "rank": 2},
    "full": {"method": "full", "lr": 1e-3},
    "heal": {"method": "heal", "lr": 1e-3},
}

EXAMPLES = [TrainExample(f"Q: what is item {i}?", " " + "alpha beta gamma delta epsilon".split()[i % 5] * (1 + i % 3)) for i in range(10)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--methods", default=",".join(SETTINGS))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skew-background", action="store_true", help="the second process gets a background of other slot counts")
    args = parser.parse_args()
    rank = int(os.environ.get("RANK", "0"))
    if args.threads:
        torch.set_num_threads(args.threads)
    calls: list[dict] = []
    select = RowSelector.select

    def recording_select(self, layer, rows, counts):
        chosen = select(self, layer, rows, counts)
        calls.append({"layer": layer, "rows": chosen.tolist()})
        return chosen

    select_fixed = RowSelector.select_fixed

    def recording_select_fixed(self, layer, counts):
        rows, valid = select_fixed(self, layer, counts)
        calls.append({"layer": layer, "rows": rows[valid].tolist()})
        return rows, valid

    RowSelector.select = recording_select
    RowSelector.select_fixed = recording_select_fixed
    first: dict[str, torch.Tensor] = {}

    def recording(before_step):
        def wrapped(self, model, optimizer):
            before_step(self, model, optimizer)
            if first:
                return
            rows = getattr(optimizer, "_rows", {})  # the sparse optimizers' selected rows
            for n, p in model.named_parameters():
                if p.grad is not None:
                    g = selected_gradient(p.grad, rows[p]) if p in rows else p.grad.to_dense()
                    first[n] = g.detach().contiguous().cpu()
        return wrapped

    Method.before_step = recording(Method.before_step)
    SmfMethod.before_step = recording(SmfMethod.before_step)
    try:
        for name in args.methods.split(","):
            calls.clear()
            first.clear()
            model, tokenizer = load_model(args.model)
            config = TrainConfig.from_dict({**SETTINGS[name], "steps": args.steps, "batch_size": args.batch_size,
                                            "grad_accum": args.grad_accum, "seed": 0, "warmup_steps": 0, "max_length": 32})
            background = None
            if args.skew_background and rank == 1:
                full = BackgroundStats.load(Path(args.model))
                background = BackgroundStats(full.batches, {i: df[: len(df) // 2] for i, df in full.df.items()},
                                             {i: c[: len(c) // 2] for i, c in full.counts.items()})
            out = Path(args.out) / name
            result = train(model, tokenizer, EXAMPLES, config, out, model_dir=args.model, background=background, progress=False)
            trainable = {n: p.detach().contiguous().cpu() for n, p in result.model.named_parameters()
                         if not name.startswith("smf") or n.endswith("memory.values")}
            save_file(trainable, str(out / f"rank{rank}.safetensors"))
            save_file(first, str(out / f"grad{rank}.safetensors"))
            (out / f"rows{rank}.json").write_text(json.dumps(calls))
    except SmfError as error:
        print(f"smf: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
