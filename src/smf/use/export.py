"""`smf export`: any model smf can load, as a folder that loads by itself.

A run's compact model (an SMF delta over its base, a LoRA adapter) becomes a standalone
folder: with memory layers a retrofitted folder that transformers loads with
`trust_remote_code=True` (and smf with its background statistics, so `smf learn` and
`smf train` can go on from it); without, a plain transformers folder (LoRA merged).
The export is loaded back and checked against the model it came from before it is kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from smf.errors import SmfError
from smf.io import atomic_dir, check_output_path
from smf.memory.delta import folder_bytes, root_folder
from smf.memory.retrofit import memory_layers, save_retrofitted
from smf.models import load_model, resolve_model
from smf.names import BACKGROUND_FILE

PROBE = "Exported models must give the same logits as the run they came from."


def export(model: str | os.PathLike, out: str | os.PathLike, say=print) -> dict:
    """Write `model` (a folder, run folder or hub id) to the new folder `out`; returns sizes and the check."""
    out = Path(out)
    check_output_path(out)
    if out.exists():
        raise SmfError(f"{out} already exists; choose a new --out")
    where = resolve_model(model)
    net, tokenizer = load_model(where)
    with atomic_dir(out) as tmp:
        if memory_layers(net):
            root = root_folder(where) if isinstance(where, Path) else None
            background = [root / BACKGROUND_FILE] if root is not None and (root / BACKGROUND_FILE).is_file() else []
            save_retrofitted(net, tokenizer, tmp, overwrite=True, copy_files=background)
        else:
            net.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        again, _ = load_model(tmp)
        ids = tokenizer(PROBE, return_tensors="pt")
        with torch.no_grad():
            gap = (net(**ids).logits - again(**ids).logits).abs().max().item()
        if gap > 1e-5:
            raise SmfError(f"the exported model's logits differ from {where}'s by {gap:.3g}; nothing was written")
    source_bytes = folder_bytes(where) if isinstance(where, Path) else None
    result = {"out": str(out), "bytes": folder_bytes(out), "source_bytes": source_bytes, "max_logit_gap": gap,
              "memory": bool(memory_layers(net))}
    kind = "retrofitted (load with trust_remote_code=True)" if result["memory"] else "plain transformers"
    say(f"exported {where} to {out}: {kind}, {result['bytes'] / 1e6:.1f} MB; max |logit difference| {gap:.1g}")
    return result
