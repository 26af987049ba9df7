"""`smf train`, `smf background` and `smf heal`."""

from __future__ import annotations

import argparse
from pathlib import Path

from smf.errors import SmfError

# flag → TrainConfig field; a flag left unset keeps the config file's value or the default
TRAIN_FLAGS = {
    "method": str, "selection": str, "top_t": int, "optimizer": str, "lr": float, "steps": int,
    "batch_size": int, "grad_accum": int, "max_length": int, "seed": int, "warmup_steps": int,
    "schedule": str, "checkpoint_every": int, "lora_r": int, "lora_alpha": int,
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="finetune a model: smf (sparse memory), lora or full")
    p.add_argument("--model", required=True, help="model folder (for smf: retrofitted, with background statistics), hub id, or 'default'")
    p.add_argument("--data", help="facts | medmcqa | triviaqa-facts | FILE.jsonl (options: facts:n_facts=60,seed=1)")
    p.add_argument("--config", type=Path, help="YAML file of training settings (TrainConfig keys, plus 'data'); flags override it")
    for flag, kind in TRAIN_FLAGS.items():
        p.add_argument("--" + flag.replace("_", "-"), type=kind, default=None)
    p.add_argument("--out", required=True, type=Path, help="run folder: log, checkpoints, final model")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(run=run_train)

    p = sub.add_parser("background", help="count which memory rows general text reads (for tfidf/kl selection)")
    p.add_argument("--model", required=True, type=Path, help="a retrofitted model folder; the statistics are saved in it")
    p.add_argument("--data", default="pydoc", help="pydoc | wikitext | FILE.txt/.jsonl (default pydoc)")
    p.add_argument("--batches", type=int, default=64, help="number of batches B (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.set_defaults(run=run_background)

    p = sub.add_parser("heal", help="train all memory parameters on general text, base frozen (needed for replacement mode)")
    p.add_argument("--model", required=True, type=Path, help="a retrofitted model folder")
    p.add_argument("--data", default="pydoc", help="pydoc | wikitext | FILE.txt/.jsonl (default pydoc)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="run folder; the healed model is written to OUT/model")
    p.add_argument("--resume", action="store_true")
    p.set_defaults(run=run_heal)


def _train_config(args) -> tuple[dict, object]:
    from smf.train import TrainConfig

    from smf.io import read_yaml_mapping

    settings = read_yaml_mapping(args.config, "training settings") if args.config else {}
    data = args.data or settings.pop("data", None)
    settings.pop("data", None)
    for flag in TRAIN_FLAGS:
        if getattr(args, flag) is not None:
            settings[flag] = getattr(args, flag)
    if data is None:
        raise SmfError("no training data; pass --data facts|medmcqa|triviaqa-facts|FILE")
    return data, TrainConfig.from_dict(settings, where=str(args.config or "command line"))


def run_train(args) -> None:
    from smf.models import load_model, resolve_model
    from smf.sources import training_examples
    from smf.train import train

    data, config = _train_config(args)
    if args.out.exists() and any(args.out.iterdir()) and not args.resume:
        raise SmfError(f"{args.out} already holds a run; pass --resume to continue it, or choose another --out")
    examples = training_examples(data)
    where = resolve_model(args.model)
    model, tokenizer = load_model(where)
    result = train(model, tokenizer, examples, config, args.out, model_dir=where if isinstance(where, Path) else None, resume=args.resume)
    s = result.summary
    print(f"trained {config.method} for {s['steps']} steps: loss {s['first_loss']:.3f} → {s['final_loss']:.3f}, "
          f"{s['train_tokens_per_s']:.0f} tokens/s; model in {args.out / 'model'}")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise SmfError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def run_background(args) -> None:
    from smf.memory.retrofit import load_retrofitted
    from smf.models import load_tokenizer
    from smf.selection import collect_background
    from smf.sources import general_texts
    from smf.train import collate, text_chunks

    _check_positive(batches=args.batches, batch_size=args.batch_size, max_length=args.max_length)
    if not (args.model / "smf_memory.json").is_file():
        raise SmfError(f"{args.model} has no memory layers (no smf_memory.json); run smf retrofit first")
    texts = general_texts(args.data)
    tokenizer = load_tokenizer(args.model)
    chunks = text_chunks(texts, tokenizer, args.max_length)
    needed = args.batches * args.batch_size
    if len(chunks) < needed:
        raise SmfError(f"'{args.data}' gives {len(chunks)} sequences of {args.max_length} tokens; {args.batches} batches of {args.batch_size} need {needed}")
    batches = [collate(chunks[i : i + args.batch_size], tokenizer.pad_token_id) for i in range(0, needed, args.batch_size)]
    stats = collect_background(load_retrofitted(args.model), batches)
    path = stats.save(args.model)
    for layer, df in stats.df.items():
        print(f"layer {layer}: {int((df > 0).sum()):,} of {len(df):,} rows read ({100 * float((df > 0).float().mean()):.1f}%)")
    print(f"background statistics of {stats.batches} batches written to {path}")


def run_heal(args) -> None:
    from smf.memory.retrofit import load_retrofitted
    from smf.models import load_tokenizer
    from smf.sources import general_texts
    from smf.train import TrainConfig, text_chunks, train

    _check_positive(steps=args.steps, batch_size=args.batch_size, max_length=args.max_length)
    if not (args.model / "smf_memory.json").is_file():
        raise SmfError(f"{args.model} has no memory layers (no smf_memory.json); run smf retrofit first")
    config = TrainConfig(method="heal", lr=args.lr, steps=args.steps, batch_size=args.batch_size, max_length=args.max_length, seed=args.seed)
    tokenizer = load_tokenizer(args.model)
    chunks = text_chunks(general_texts(args.data), tokenizer, args.max_length)
    result = train(load_retrofitted(args.model), tokenizer, chunks, config, args.out, model_dir=args.model, resume=args.resume)
    print(f"healed for {args.steps} steps: loss {result.summary['first_loss']:.3f} → {result.summary['final_loss']:.3f}; "
          f"model in {args.out / 'model'} (its keys changed: run smf background on it before smf training)")
