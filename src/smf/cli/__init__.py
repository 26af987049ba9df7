"""The `smf` command: the top layer, above every package it drives (one module per group
of subcommands: `smf.cli.memory`, `smf.cli.train`, ...).

A module listed in COMMANDS defines `register(subparsers)`, which adds its
subcommands with `set_defaults(run=callable)`; the callable takes the parsed
arguments and returns an exit code (None means 0).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from smf.errors import SmfError

COMMANDS = [
    "smf.cli.memory",
    "smf.cli.evaluate",
    "smf.cli.train",
    "smf.cli.study",
    "smf.cli.use",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smf", description="Sparse Memory Finetuning: learn without forgetting.")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback instead of one line (for bug reports)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def os_error(e: OSError) -> str:
    """One line for a failed read or write: the path, what went wrong, the fix."""
    import errno

    path = e.filename or "a file"
    if isinstance(e, PermissionError):
        return f"cannot write or read {path}: permission denied; choose a folder you can write to"
    if e.errno == errno.ENOSPC:
        return f"the disk is full while writing {path}; free some space or choose another output folder"
    if isinstance(e, IsADirectoryError):
        return f"{path} is a folder; give a file path"
    if isinstance(e, (NotADirectoryError, FileExistsError)):
        return f"{path}: part of this path is a file, not a folder; choose another output path"
    return f"{path}: {e.strerror or e}"


# How torch and CUDA word a failed allocation (a RuntimeError, not a MemoryError).
NO_MEMORY = ("out of memory", "not enough memory", "can't allocate memory", "size calculation overflowed")


def unforeseen(e: BaseException) -> str:
    """One line for an error no check caught: what it was, and how to see more."""
    text = " ".join(str(e).split())
    if isinstance(e, MemoryError) or any(words in text.lower() for words in NO_MEMORY):
        return "not enough memory for this command; choose a smaller size (slots, batch size, max length) or a larger machine"
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(e).__name__}: {text or 'no message'} (smf did not foresee this; rerun with smf --debug ... for the traceback, and report it)"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars; ours show the real work
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("smf: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        if isinstance(e, SmfError):
            line = str(e)
        elif isinstance(e, OSError):  # a write or read the code did not foresee: still one line naming the path
            line = os_error(e)
        else:
            line = unforeseen(e)
        print(f"smf: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
