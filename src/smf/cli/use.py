"""`smf learn` (teach facts), `smf ask` (one answer), `smf chat` (a conversation, /reset and /quit), `smf export`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smf.config import add_arguments, flag, given, metavar, parse_flag
from smf.errors import SmfError
from smf.models import PRECISIONS, compute_device, load_model
from smf.use.chat import answer
from smf.use.export import export
from smf.use.learn import LEARN_PRESET, SHORTCUTS, LearnConfig, learn
from smf.use.learn.config import LEARN_METHODS, PRESET_STUDY, nested_field

LEARN_FLAGS: list[str] = []

HELP = "commands: /reset forgets the conversation, /quit (or Ctrl-D) leaves; Ctrl-C stops an answer"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="ask a model one question; the answer is streamed")
    p.add_argument("question", nargs="?", help="the question (quote it)")
    p.add_argument("--model", default="default", help="model folder, run folder's model, hub id, or 'default'")
    p.add_argument("--max-new-tokens", type=int, default=128, help="longest answer in tokens (default %(default)s)")
    _precision_flag(p)
    p.set_defaults(run=run_ask)

    p = sub.add_parser("chat", help="talk with a model (multi-turn; /reset, /quit)")
    p.add_argument("--model", default="default", help="model folder, run folder's model, hub id, or 'default'")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest answer in tokens (default %(default)s)")
    _precision_flag(p)
    p.set_defaults(run=run_chat)
    register_learn(sub)

    p = sub.add_parser("export", help="write any model smf loads (a run folder too) as a folder that loads by itself")
    p.add_argument("model", help="a run folder, model folder or hub id")
    p.add_argument("--out", required=True, type=Path, help="the new folder (must not exist)")
    p.set_defaults(run=run_export)


def _precision_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mixed-precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16 autocast on a GPU, fp32 on the CPU (as training and evaluation); default %(default)s")


def _load(args):
    if args.max_new_tokens < 1:
        raise SmfError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    return load_model(args.model, device=compute_device())


def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_ask(args) -> None:
    if not args.question or not args.question.strip():
        raise SmfError('no question; usage: smf ask --model M "your question"')
    model, tokenizer = _load(args)
    answer(model, tokenizer, [{"role": "user", "content": args.question}], max_new_tokens=args.max_new_tokens, emit=_emit,
           mixed_precision=args.mixed_precision)
    print()


def run_chat(args) -> None:
    model, tokenizer = _load(args)
    print(f"chatting with {args.model}; {HELP}", flush=True)
    turns: list[dict] = []
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return
        except KeyboardInterrupt:
            print()
            return
        except UnicodeDecodeError as e:
            raise SmfError(f"the input is not UTF-8 text (byte {e.start} of a line); type or pipe UTF-8 text") from None
        text = line.strip()
        if text in ("/quit", "/exit"):
            return
        if text == "/reset":
            turns = []
            print("(conversation reset)", flush=True)
            continue
        if not text:
            continue
        if text.startswith("/"):
            print(f"(unknown command {text}; {HELP})", flush=True)
            continue
        turns.append({"role": "user", "content": text})
        _emit("model> ")
        try:
            reply = answer(model, tokenizer, turns, max_new_tokens=args.max_new_tokens, emit=_emit,
                           mixed_precision=args.mixed_precision)
        except KeyboardInterrupt:
            reply = ""
            _emit(" (stopped)")
        print(flush=True)
        if reply:
            turns.append({"role": "assistant", "content": reply})
        else:
            turns.pop()


def run_export(args) -> None:
    export(args.model, args.out)


ADVANCED = ("count", "top_t", "optimizer", "slots", "background", "background_batches", "background_batch_size",
            "max_length", "batch_size")  # shortcuts shown among the advanced settings
EVERYDAY = ("method", "epochs", "steps", "lr", "seed")  # shortcuts shown with the everyday ones
METHOD_HELP = ("smf (memory layers, sparse updates; the default), lora or full: the same study data and passes through LoRA "
               "or full finetuning, to see what SMF spares (their learning rates: METHOD_PRESETS)")


def register_learn(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("learn", help="teach a model your own facts or notes in one command",
                       description="Teach a model facts: notes as .txt or .md (one statement per line or bullet), or "
                                   '.jsonl/.json rows {"text"}, {"question", "answer"} or {"prompt", "target"}. Each fact '
                                   "becomes study data (questions in several wordings answered by the fact, the statement "
                                   "restated), so the model answers it asked in words you never gave. Its training, "
                                   "memory and background are smf train's, smf retrofit's and smf background's, at their "
                                   f"defaults except where LEARN_PRESET ({PRESET_STUDY}) says otherwise.")
    p.add_argument("--data", required=True, type=Path, help="the facts or notes file (or a study file from --study-out)")
    p.add_argument("--model", default=None, help="the model to teach: default, a hub id or folder, or a folder smf learn wrote (continues it)")
    p.add_argument("--out", required=True, type=Path, help="the new model folder (must be new or empty)")
    p.add_argument("--study-out", type=Path, default=None, help="also write the study data it trained on to this new "
                                                                "JSONL file (read it, edit it, give it back with --data)")
    everyday = p.add_argument_group("the sitting")
    advanced = p.add_argument_group("advanced (memory, background and forgetting; the defaults are the learn check's)")
    for name, paths in SHORTCUTS.items():
        hint = nested_field(paths[0])[1]
        (everyday if name in EVERYDAY else advanced).add_argument(
            flag(name), dest=name, default=None, metavar="{" + ",".join(LEARN_METHODS) + "}" if name == "method" else metavar(name, hint),
            help=METHOD_HELP if name == "method" else _shortcut_help(paths), type=lambda text, hint=hint: parse_flag(text, hint))
    mine = add_arguments(everyday, LearnConfig, only=("per_fact", "study_model", "study_wordings", "show"))
    LEARN_FLAGS[:] = list(SHORTCUTS) + mine + add_arguments(advanced, LearnConfig, skip=LearnConfig.NESTED + tuple(mine))
    p.set_defaults(run=run_learn)


def _shortcut_help(paths: tuple[str, ...]) -> str:
    """A nested setting's help, its default in smf learn and where that default comes from."""
    field, _, value, plain = nested_field(paths[0])
    section, _, name = paths[0].partition(".")
    shown = "none" if value is None else value
    if name == "steps" and LEARN_PRESET["train"].get("epochs"):  # the preset's passes decide unless steps are given
        shown = "from --epochs"
    if name in LEARN_PRESET.get(section, {}):
        shown = f"{shown}, smf learn's preset ({PRESET_STUDY}; without it {'none' if plain is None else plain})"
    return f"{field.metadata.get('help', '')} [{', '.join(paths)}] (default: {shown})".replace("%", "%%")


def run_learn(args) -> None:
    config = LearnConfig.from_dict(given(args, LEARN_FLAGS), where="command line")
    learn(args.data, args.out, model=args.model, config=config, study_out=args.study_out)
