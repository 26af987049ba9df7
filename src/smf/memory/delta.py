"""Compact run folders: only the weights a run changed, over the folder it started from.

An SMF run changes a few thousand rows of its memory value tables and nothing else, so
its saved model need not be a model copy. Like a PEFT adapter, a delta folder holds

- `smf_delta.json`: the base folder (its path relative to the delta folder and its
  absolute path) and the base's `fingerprint` (its weights by content, its memory and
  architecture configuration);
- `delta.safetensors`: for every tensor that changed, either its changed rows
  (`NAME::rows`, int64, and `NAME::values`) or, when most rows changed, the whole tensor.

The base is always a full folder (a delta of a delta is written against the first base),
and loading checks its checksum: a base that changed since is refused, never combined.
No `config.json` is written, so transformers refuses the folder instead of loading it
wrong; `smf export` turns it into a standalone model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from smf.errors import SmfError
from smf.io import atomic_dir, read_json, reading, write_json_atomic
from smf.names import (ADAPTER_FILE, ADAPTER_WEIGHTS, DELTA_FILE, DELTA_WEIGHTS, HF_CONFIG_FILE, MEMORY_FILE,
                       WEIGHTS_FILE)
_ROWS, _VALUES = "::rows", "::values"
_checked: dict[tuple, str] = {}  # (kind, path, size, mtime) -> sha256, so a process hashes a base once
# Keys of a folder's JSON files that say where or by which version it was written, not what it computes.
_NOT_DEFINING = {"transformers_version", "_name_or_path", "smf_version", "base_model", "base_model_name_or_path",
                 "revision", "base", "base_absolute", "changed", "method"}


def is_delta(path: str | os.PathLike) -> bool:
    return (Path(path) / DELTA_FILE).is_file()


def checksum(file: Path) -> str:
    """SHA-256 of a file (cached per process by path, size and modification time)."""
    return _cached("bytes", file, _file_bytes)


def _cached(kind: str, file: Path, compute) -> str:
    stat = file.stat()
    key = (kind, str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _checked:
        _checked[key] = compute(file)
    return _checked[key]


def _file_bytes(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def content_checksum(file: Path) -> str:
    """SHA-256 of what a safetensors file holds: its tensors by name (dtype, shape, values) and its metadata,
    keys sorted; not the bytes, whose header order and layout may differ between two writes of the same
    content (cached per process as `checksum`). For background statistics, whose metadata counts the batches."""
    return _cached("tensors+metadata", file, _tensors_and_metadata)


def _tensors_and_metadata(file: Path) -> str:
    with reading(file, "the model folder is damaged"), safe_open(str(file), "pt") as f:
        metadata = f.metadata() or {}
    return hashlib.sha256(json.dumps([_tensors(file), sorted(metadata.items())]).encode()).hexdigest()


def _tensors(file: Path) -> str:
    # By name in sorted order, not the file's bytes: the header's order and metadata may differ
    # between two writes of the same weights.
    digest = hashlib.sha256()
    with reading(file, "the model folder is damaged"), safe_open(str(file), "pt") as f:
        for name in sorted(f.keys()):
            t = f.get_tensor(name).contiguous()
            digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(folder: str | os.PathLike) -> str:
    """One checksum of what defines a model folder: its weights by content (model, adapter or delta),
    its architecture (config.json), its memory configuration (smf_memory.json), a LoRA adapter's
    configuration, and a delta's base. JSON is compared parsed, keys sorted, without the keys that
    say only where or by which version a folder was written; so a folder re-made the same way
    matches, and one with other memory settings does not."""
    folder = Path(folder)
    parts = {}
    for name in (WEIGHTS_FILE, ADAPTER_WEIGHTS, DELTA_WEIGHTS):
        if (folder / name).is_file():
            parts[name] = _cached("tensors", folder / name, _tensors)
    for name in (HF_CONFIG_FILE, MEMORY_FILE, ADAPTER_FILE, DELTA_FILE):
        if (folder / name).is_file():
            data = read_json(folder / name)
            parts[name] = {k: v for k, v in data.items() if k not in _NOT_DEFINING} if isinstance(data, dict) else data
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def base_record(base: str | os.PathLike, out: str | os.PathLike) -> dict:
    """How a saved run names the folder it was trained from: relative to the run, absolute, and by content."""
    base = Path(base).resolve()
    return {"base": os.path.relpath(base, Path(out).resolve()), "base_absolute": str(base),
            "base_fingerprint": fingerprint(base)}


def find_base(run: str | os.PathLike, meta, where: str | os.PathLike, markers: tuple[str, ...] = (WEIGHTS_FILE,)) -> Path:
    """The base folder a run's record (`meta`, read from the file `where`) names, found relative to
    the run first, then by its absolute path, and checked by content: another folder is refused."""
    run = Path(run)
    keys = {"base", "base_absolute"}
    if not isinstance(meta, dict) or not keys <= set(meta) or not all(isinstance(meta[k], str) for k in keys) \
            or not isinstance(meta.get("base_fingerprint", meta.get("base_sha256")), str):
        raise SmfError(f"{where}: not an smf record of a run's base (needs base, base_absolute and base_fingerprint as text)")
    candidates = [(run / meta["base"]).resolve(), Path(meta["base_absolute"])]
    found = [c for c in dict.fromkeys(candidates) if any((c / m).is_file() for m in markers)]
    if not found:
        raise SmfError(f"{run} stores only what its run changed, and its base model is gone "
                       f"(looked in {candidates[0]} and {candidates[1]}); put the base folder back, "
                       f"or export the run while it is there: smf export {run} --out DIR")
    if "base_fingerprint" in meta:
        recorded, what, content = meta["base_fingerprint"], "fingerprint", fingerprint
    else:  # written by smf before fingerprints: the bytes of the base's weights file
        recorded, what, content = meta["base_sha256"], f"checksum of {WEIGHTS_FILE}", lambda c: checksum(c / WEIGHTS_FILE)
    for folder in found:  # a stale copy where the relative path points does not hide the base at the absolute one
        if content(folder) == recorded:
            return folder
    raise SmfError(f"{run} was trained from another base than {found[0]} ({what} {content(found[0])[:12]} here, "
                   f"{recorded[:12]} recorded in {where}); its changes cannot be applied to this base")


def delta_base(path: str | os.PathLike) -> Path:
    """The full folder a delta folder was written against, after checking its checksum."""
    path = Path(path)
    return find_base(path, read_json(path / DELTA_FILE), path / DELTA_FILE)


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
            **base_record(base, out),
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
                rows, values = f.get_tensor(key), f.get_tensor(name + _VALUES) if name + _VALUES in f.keys() else None
                if values is None or rows.dim() != 1 or rows.dtype != torch.int64 or target.dim() != 2 \
                        or tuple(values.shape) != (rows.numel(), target.shape[1]):
                    raise SmfError(f"{path / DELTA_WEIGHTS} is damaged: the changed rows of {name} do not fit its "
                                   f"{tuple(target.shape)} table; export or train the run again")
                if rows.numel() and not (0 <= int(rows.min()) and int(rows.max()) < target.shape[0]):
                    raise SmfError(f"{path / DELTA_WEIGHTS} is damaged: it changes rows of {name} outside its "
                                   f"{target.shape[0]} rows; export or train the run again")
                target[rows.to(target.device)] = values.to(target.device, target.dtype)
            else:
                tensor = f.get_tensor(key)
                if tensor.shape != target.shape:
                    raise SmfError(f"{path / DELTA_WEIGHTS} is damaged: {name} is {tuple(tensor.shape)}, "
                                   f"its base's {tuple(target.shape)}; export or train the run again")
                target.copy_(tensor)
    return model


def folder_bytes(path: str | os.PathLike) -> int:
    """Total size of the files in a folder (recursively)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
