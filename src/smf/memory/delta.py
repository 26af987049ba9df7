"""Compact run folders: only the weights a run changed, over the folder it started from.

An SMF run changes a few thousand rows of its memory value tables and nothing else, so
its saved model need not be a model copy. Like a PEFT adapter, a delta folder holds

- `smf_delta.json`: the base folder (its path relative to the delta folder and its
  absolute path) and the SHA-256 of the base's `model.safetensors`;
- `delta.safetensors`: for every tensor that changed, either its changed rows
  (`NAME::rows`, int64, and `NAME::values`) or, when most rows changed, the whole tensor.

The base is always a full folder (a delta of a delta is written against the first base),
and loading checks its checksum: a base that changed since is refused, never combined.
No `config.json` is written, so transformers refuses the folder instead of loading it
wrong; `smf export` turns it into a standalone model.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from smf.errors import SmfError
from smf.io import atomic_dir, read_json, reading, write_json_atomic
from smf.names import DELTA_FILE, DELTA_WEIGHTS, WEIGHTS_FILE
_ROWS, _VALUES = "::rows", "::values"
_checked: dict[tuple, str] = {}  # (path, size, mtime) -> sha256, so a process hashes a base once


def is_delta(path: str | os.PathLike) -> bool:
    return (Path(path) / DELTA_FILE).is_file()


def checksum(file: Path) -> str:
    """SHA-256 of a file (cached per process by path, size and modification time)."""
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _checked:
        digest = hashlib.sha256()
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        _checked[key] = digest.hexdigest()
    return _checked[key]


def delta_base(path: str | os.PathLike) -> Path:
    """The full folder a delta folder was written against, after checking its checksum."""
    path = Path(path)
    meta = read_json(path / DELTA_FILE)
    if not isinstance(meta, dict) or not {"base", "base_absolute", "base_sha256"} <= set(meta):
        raise SmfError(f"{path / DELTA_FILE}: not an smf delta description (needs base, base_absolute, base_sha256)")
    candidates = [(path / meta["base"]).resolve(), Path(meta["base_absolute"])]
    found = next((c for c in candidates if (c / WEIGHTS_FILE).is_file()), None)
    if found is None:
        raise SmfError(f"{path} stores only what its run changed, and its base model is gone "
                       f"(looked in {candidates[0]} and {candidates[1]}); put the base folder back, "
                       f"or export the run while it is there: smf export {path} --out DIR")
    if checksum(found / WEIGHTS_FILE) != meta["base_sha256"]:
        raise SmfError(f"{path} was trained from a different version of {found} (checksum of {WEIGHTS_FILE} differs); "
                       "its changes cannot be applied to this base")
    return found


def root_folder(path: str | os.PathLike) -> Path:
    """A full model folder for `path`: itself, or the base of a delta folder."""
    return delta_base(path) if is_delta(path) else Path(path)


def save_delta(model: nn.Module, base: str | os.PathLike, out: str | os.PathLike, *, extra: dict | None = None) -> dict:
    """Write what `model` changed against the full folder `base` (or a delta's base) to `out`, atomically.

    Returns {"tensors": n changed, "rows": n rows stored, "parameters": n values stored}.
    """
    base = root_folder(base)
    state = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    stats = {"tensors": 0, "rows": 0, "parameters": 0}
    with reading(base / WEIGHTS_FILE, "the base folder is damaged"), safe_open(str(base / WEIGHTS_FILE), "pt") as f:
        names = list(f.keys())
        if set(names) - set(state):
            raise SmfError(f"the model does not match {base}: it lacks {sorted(set(names) - set(state))[:3]}")
        for name in names:
            was, now = f.get_tensor(name), state[name].detach().to("cpu")
            if was.shape != now.shape or was.dtype != now.dtype:
                raise SmfError(f"the model does not match {base}: {name} is {tuple(now.shape)} {now.dtype}, "
                               f"the base's {tuple(was.shape)} {was.dtype}")
            changed = now != was
            if not changed.any():
                continue
            stats["tensors"] += 1
            if now.dim() == 2 and (rows := changed.any(dim=1).nonzero().flatten()).numel() * 2 <= now.shape[0]:
                tensors[name + _ROWS] = rows
                tensors[name + _VALUES] = now[rows].contiguous()
                stats["rows"] += rows.numel()
                stats["parameters"] += rows.numel() * now.shape[1]
            else:
                tensors[name] = now.contiguous()
                stats["parameters"] += now.numel()
    out = Path(out)
    with atomic_dir(out, overwrite=True) as tmp:
        save_file(tensors, str(tmp / DELTA_WEIGHTS), metadata={"format": "pt"})
        write_json_atomic(tmp / DELTA_FILE, {
            "base": os.path.relpath(base.resolve(), out.resolve()),
            "base_absolute": str(base.resolve()),
            "base_sha256": checksum(base / WEIGHTS_FILE),
            "changed": stats,
            **(extra or {}),
        })
    return stats


def apply_delta(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Write a delta folder's stored tensors and rows into `model` (its base, loaded)."""
    path = Path(path)
    state = model.state_dict()
    with reading(path / DELTA_WEIGHTS, "the run folder is damaged"), safe_open(str(path / DELTA_WEIGHTS), "pt") as f, torch.no_grad():
        for key in sorted(f.keys()):
            if key.endswith(_VALUES):
                continue
            name = key.removesuffix(_ROWS)
            if name not in state:
                raise SmfError(f"{path / DELTA_WEIGHTS} changes {name}, which its base model does not have")
            target = state[name]
            if key.endswith(_ROWS):
                rows = f.get_tensor(key).to(target.device)
                target[rows] = f.get_tensor(name + _VALUES).to(target.device, target.dtype)
            else:
                target.copy_(f.get_tensor(key))
    return model


def folder_bytes(path: str | os.PathLike) -> int:
    """Total size of the files in a folder (recursively)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
