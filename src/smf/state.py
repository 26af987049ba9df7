"""Training state (optimizer, scheduler, random generators) saved without pickle.

A checkpoint someone hands you must not run their code when you resume it, so the state
is one safetensors file: every tensor as a named tensor, and the structure around them
(dicts with int or str keys, lists, tuples, numbers, strings, None) as JSON in the file's
metadata. Loading builds only those types; anything else in the file is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from smf.errors import SmfError

STRUCTURE_KEY = "smf_state"
MAX_DEPTH = 32  # optimizer and scheduler states nest a few levels; deeper is not ours
MAX_NODES = 10_000_000


def _encode(value, tensors: dict[str, torch.Tensor], depth: int = 0):
    if depth > MAX_DEPTH:
        raise ValueError("training state nested too deeply to save")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return {"int": str(value)}  # JSON numbers lose big ints in other readers; strings do not
    if isinstance(value, float):
        return {"float": repr(value)}  # repr round-trips, inf and nan included
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().contiguous().cpu()
        return {"tensor": name}
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise ValueError(f"training state has a key of type {type(k).__name__}; only str and int keys are saved")
            items.append([_encode(k, tensors, depth + 1), _encode(v, tensors, depth + 1)])
        return {"dict": items}
    if isinstance(value, (list, tuple)):
        return {"tuple" if isinstance(value, tuple) else "list": [_encode(v, tensors, depth + 1) for v in value]}
    raise ValueError(f"training state holds a {type(value).__name__}, which is not saved")


def save_state(path: str | Path, state) -> None:
    """Write `state` (nested dicts/lists/tuples of tensors, numbers, strings, None) to `path`."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(state, tensors)
    save_file(tensors, str(path), metadata={STRUCTURE_KEY: json.dumps(structure, allow_nan=False)})


class _Decoder:
    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors, self.nodes = tensors, 0

    def __call__(self, node, depth: int = 0):
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise ValueError("nested too deeply")
        if node is None or isinstance(node, (bool, str)):
            return node
        if not isinstance(node, dict) or len(node) != 1:
            raise ValueError(f"unexpected {type(node).__name__}")
        (kind, body), = node.items()
        if kind == "int" and isinstance(body, str):
            return int(body)
        if kind == "float" and isinstance(body, str):
            return float(body)
        if kind == "tensor" and isinstance(body, str):
            if body not in self.tensors:
                raise ValueError(f"names a missing tensor {body!r}")
            return self.tensors[body]
        if kind in ("list", "tuple") and isinstance(body, list):
            items = [self(v, depth + 1) for v in body]
            return tuple(items) if kind == "tuple" else items
        if kind == "dict" and isinstance(body, list):
            out = {}
            for pair in body:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ValueError("a dict entry that is not a pair")
                key = self(pair[0], depth + 1)
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    raise ValueError("a dict key that is not a str or int")
                out[key] = self(pair[1], depth + 1)
            return out
        raise ValueError(f"unknown entry {kind!r}")


def load_state(path: str | Path, fix: str):
    """Read what `save_state` wrote; any other content is refused with `fix` (one line)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            structure = (f.metadata() or {}).get(STRUCTURE_KEY)
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (OSError, RuntimeError, ValueError) as e:  # safetensors' own errors derive from these
        raise SmfError(f"{path} is not a training state smf wrote ({str(e).splitlines()[0][:120]}); {fix}") from None
    except Exception as e:  # noqa: BLE001 - SafetensorError is not exported under one stable name
        raise SmfError(f"{path} is not a training state smf wrote ({type(e).__name__}); {fix}") from None
    if structure is None:
        raise SmfError(f"{path} holds no training state; {fix}")
    try:
        return _Decoder(tensors)(json.loads(structure))
    except (ValueError, RecursionError) as e:
        raise SmfError(f"{path} holds a damaged training state ({str(e)[:120]}); {fix}") from None
