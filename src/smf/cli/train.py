"""`smf train`, `smf background` and `smf heal`.

Their flags come from the config dataclasses (TrainConfig and every registered
method's options; BackgroundConfig; HealConfig), with the fields' help texts.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from smf.config import add_arguments, flag, given, read_config
from smf.data.sources import check_source, for_seed, training_examples
from smf.errors import SmfError
from smf.lock import output_lock
from smf.methods import METHODS, TrainConfig
from smf.methods.base import option_owners
from smf.methods.heal import HealConfig
from smf.models import load_model, resolve_model
from smf.selection import BackgroundConfig
from smf.train import train
from smf.train.loop import check_output
from smf.train.stages import background_statistics, heal

SHARED_FLAGS: list[str] = []
OPTION_FLAGS: list[str] = []
BACKGROUND_FLAGS: list[str] = []
HEAL_FLAGS: list[str] = []


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="finetune a model: smf (sparse memory), lora, full, replay or kl-anchor",
                       description="Train a model with one method; flags override --config (a YAML file; 'base: FILE' "
                                   "extends another), which overrides the defaults. Each default names the study that "
                                   "chose it (studies/NAME).")
    p.add_argument("--model", required=True, help="model folder (for smf: retrofitted, with background statistics), hub id, or 'default'")
    p.add_argument("--data", help="training data: facts | medmcqa | triviaqa-facts | FILE.jsonl/.txt, with options as facts:n_facts=60,seed=1")
    p.add_argument("--config", type=Path, help="YAML file of training settings (the flags below, plus 'data'; 'base: FILE' "
                                               "extends FILE, relative to this one); flags override it")
    p.add_argument("--out", required=True, type=Path, help="run folder: config, log, checkpoints, final model")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    shared = p.add_argument_group("training settings (every method; TrainConfig)")
    SHARED_FLAGS[:] = add_arguments(shared, TrainConfig, skip=("options",))
    options = p.add_argument_group("method options (each for the methods in brackets; their Options, e.g. SmfOptions)")
    for name, methods in option_owners().items():
        add_arguments(options, METHODS[methods[0]].Options, only=(name,), prefix=f"[{', '.join(methods)}] ")
    OPTION_FLAGS[:] = list(option_owners())
    for old in TrainConfig.RENAMED:  # old flags answer with their new name
        p.add_argument(flag(old), dest=f"renamed_{old}", default=None, help=argparse.SUPPRESS)
    p.set_defaults(run=run_train)

    p = sub.add_parser("background", help="count which memory rows general text reads (for tfidf/kl selection)")
    p.add_argument("--model", required=True, type=Path, help="a retrofitted model folder; the statistics are saved in it")
    BACKGROUND_FLAGS[:] = add_arguments(p, BackgroundConfig)
    p.set_defaults(run=run_background)

    p = sub.add_parser("heal", help="train all memory parameters on general text, base frozen (needed for replacement mode)")
    p.add_argument("--model", required=True, type=Path, help="a retrofitted model folder")
    HEAL_FLAGS[:] = add_arguments(p, HealConfig)
    p.add_argument("--out", required=True, type=Path, help="run folder; the healed model is written to OUT/model")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(run=run_heal)


def train_settings(args) -> tuple[object, object]:
    """(data source, TrainConfig) from --config, then the flags; checked whole."""
    for old, new in TrainConfig.RENAMED.items():
        if getattr(args, f"renamed_{old}", None) is not None:
            raise SmfError(f"{flag(old)} is now {flag(new)}")
    settings = read_config(args.config, "training settings") if args.config else {}
    where = str(args.config) if args.config else "command line"
    data = args.data or settings.pop("data", None)
    settings.pop("data", None)
    settings.update(given(args, SHARED_FLAGS + OPTION_FLAGS))
    if data is None:
        raise SmfError("no training data; pass --data facts|medmcqa|triviaqa-facts|FILE")
    config = TrainConfig.from_dict(settings, where=where)
    check_source(data, "train", "--data")
    return data, config


def run_train(args) -> None:
    data, config = train_settings(args)
    with output_lock(args.out):
        check_output(args.out, config, args.resume)  # before any model work
        examples = training_examples(for_seed(data, config.seed))  # seed: run is the run's --seed
        where = resolve_model(args.model)
        model, tokenizer = load_model(where)
        result = train(model, tokenizer, examples, config, args.out, model_dir=where if isinstance(where, Path) else None,
                       resume=args.resume)
    s = result.summary
    if s.get("processes", 1) > 1 and int(os.environ.get("RANK", "0")) != 0:
        return  # one report, from the main process
    print(f"trained {config.method} for {s['steps']} steps: loss {s['first_loss']:.3f} → {s['final_loss']:.3f}, "
          f"{s['train_tokens_per_s']:.0f} tokens/s; model in {args.out / 'model'}")


def run_background(args) -> None:
    config = BackgroundConfig.from_dict(given(args, BACKGROUND_FLAGS), where="command line")
    stats = background_statistics(args.model, config)
    for layer, df in stats.df.items():
        print(f"layer {layer}: {int((df > 0).sum()):,} of {len(df):,} rows read ({100 * float((df > 0).float().mean()):.1f}%)")
    print(f"background statistics of {stats.batches} batches written to {args.model}")


def run_heal(args) -> None:
    config = HealConfig.from_dict(given(args, HEAL_FLAGS), where="command line")
    with output_lock(args.out):
        result = heal(args.model, config, args.out, resume=args.resume)
    print(f"healed for {result.summary['steps']} steps: loss {result.summary['first_loss']:.3f} → {result.summary['final_loss']:.3f}; "
          f"model in {args.out / 'model'} (its keys changed: run smf background on it before smf training)")

