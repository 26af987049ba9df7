"""The folder's files: what a sitting saves beside the model for later sittings (kept answers, protected rows)."""

from __future__ import annotations

import json
import re
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from smf.data.types import TrainExample
from smf.errors import SmfError
from smf.io import MAX_JSON_BYTES, read_bytes_bounded, reading, write_text_atomic
from smf.names import KEPT_FILE, PROTECTED_FILE

LEARN_RUN = "learn_run"  # the training run's config, log and summary, inside the model folder


def read_protected(folder: Path | None) -> dict[int, torch.Tensor]:
    """Per memory layer, the rows earlier sittings protected (PROTECTED_FILE in `folder`); {} without the file."""
    path = Path(folder) / PROTECTED_FILE if folder is not None else None
    if path is None or not path.is_file():
        return {}
    fix = "delete it to stop sparing the earlier sittings' rows, or teach from the folder before it"
    with reading(path, fix):
        tensors = load_file(str(path))
    out = {}
    for name, rows in tensors.items():
        if not (re.fullmatch(r"rows\.\d{1,4}", name) and rows.dim() == 1 and not rows.is_floating_point()):
            raise SmfError(f"cannot read {path}: {name!r} is not a layer's list of row numbers; {fix}")
        out[int(name.removeprefix("rows."))] = rows
    return out


def write_protected(folder: Path, rows: dict[int, torch.Tensor]) -> None:
    """Save the protected rows per memory layer in `folder` (PROTECTED_FILE, atomically)."""
    tmp = Path(folder) / f".{PROTECTED_FILE}.tmp"
    save_file({f"rows.{layer}": r.contiguous() for layer, r in rows.items()}, str(tmp))
    os.replace(tmp, Path(folder) / PROTECTED_FILE)


def read_kept(folder: Path) -> list[TrainExample]:
    """The kept answers saved in `folder` (KEPT_FILE, by an earlier sitting), as examples; [] without the file."""
    path = Path(folder) / KEPT_FILE
    if not path.is_file():
        return []

    def damaged(why: str) -> SmfError:
        return SmfError(f"{path} is damaged ({why}); delete it to keep only this sitting's answers")

    try:
        lines = read_bytes_bounded(path, MAX_JSON_BYTES, "kept answers file", "delete it to keep only this sitting's answers").decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise damaged(f"not UTF-8 text, byte {e.start}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise damaged(f"line {n}: not valid JSON, {e.msg}") from None
        except (RecursionError, ValueError) as e:  # nesting too deep, a number too long to read
            raise damaged(f"line {n}: not a row smf wrote ({type(e).__name__})") from None
        if not (isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("target"), str)
                and row["target"]):
            raise damaged(f'line {n}: not a {{"prompt": text, "target": text}} row')
        out.append(TrainExample(row["prompt"], row["target"]))
    if not out:
        raise damaged("no rows")
    return out


def write_kept(folder: Path, examples: list[TrainExample]) -> None:
    """Save the kept answers in `folder` (KEPT_FILE, atomically), for later sittings."""
    write_text_atomic(Path(folder) / KEPT_FILE, "".join(json.dumps({"prompt": e.prompt, "target": e.target}) + "\n" for e in examples))
