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


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars; ours show the real work
    try:
        return int(args.run(args) or 0)
    except SmfError as e:
        print(f"smf: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a write or read the code did not foresee: still one line naming the path
        print(f"smf: error: {os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("smf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
