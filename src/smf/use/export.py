"""`smf export`: any model smf can load, as a folder that loads by itself.

A run's compact model (an SMF delta over its base, a LoRA adapter) becomes a standalone
folder: with memory layers a retrofitted folder that transformers loads with
`trust_remote_code=True` (and smf with its background statistics, so `smf learn` and
`smf train` can go on from it); without, a plain transformers folder (LoRA merged).
The export is loaded back and checked against the model it came from before it is kept.
What later commands read from the source folder comes along (background statistics, `smf learn`'s
protected rows and kept answers); whatever else the folder holds is named as left behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from smf.errors import SmfError
from smf.io import atomic_dir, check_output_path
from smf.memory.delta import folder_bytes, root_folder
from smf.memory.retrofit import memory_layers, save_retrofitted
from smf.models import load_model, resolve_model
from smf.names import (ADAPTER_BASE_FILE, ADAPTER_FILE, ADAPTER_WEIGHTS, BACKGROUND_FILE, DELTA_FILE, DELTA_WEIGHTS,
                       KEPT_FILE, PROTECTED_FILE)

PROBE = "Exported models must give the same logits as the run they came from."
CARRIED = (BACKGROUND_FILE, PROTECTED_FILE, KEPT_FILE)  # read from a model folder by smf train and smf learn
MERGED = {DELTA_FILE, DELTA_WEIGHTS, ADAPTER_FILE, ADAPTER_WEIGHTS, ADAPTER_BASE_FILE}  # become the export's weights


def export(model: str | os.PathLike, out: str | os.PathLike, say=print) -> dict:
    """Write `model` (a folder, run folder or hub id) to the new folder `out`; returns sizes and the check."""
    out = Path(out)
    check_output_path(out)
    if out.exists():
        raise SmfError(f"{out} already exists; choose a new --out")
    where = resolve_model(model)
    net, tokenizer = load_model(where)
    carried = _carried(where)
    with atomic_dir(out) as tmp:
        if memory_layers(net):
            save_retrofitted(net, tokenizer, tmp, overwrite=True, copy_files=carried)
        else:
            net.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            for file in carried:
                shutil.copy2(file, tmp / file.name)
        again, _ = load_model(tmp)
        ids = tokenizer(PROBE, return_tensors="pt")
        with torch.no_grad():
            gap = (net(**ids).logits - again(**ids).logits).abs().max().item()
        if gap > 1e-5:
            raise SmfError(f"the exported model's logits differ from {where}'s by {gap:.3g}; nothing was written")
    source_bytes = folder_bytes(where) if isinstance(where, Path) else None
    left = sorted(p.name for p in where.iterdir() if p.name not in MERGED and not (out / p.name).exists()) if isinstance(where, Path) else []
    result = {"out": str(out), "bytes": folder_bytes(out), "source_bytes": source_bytes, "max_logit_gap": gap,
              "memory": bool(memory_layers(net)), "carried": [f.name for f in carried], "left_behind": left}
    kind = "retrofitted (load with trust_remote_code=True)" if result["memory"] else "plain transformers"
    say(f"exported {where} to {out}: {kind}, {result['bytes'] / 1e6:.1f} MB; max |logit difference| {gap:.1g}")
    if left:
        say(f"left behind in {where} (not part of the model): {', '.join(left)}")
    return result


def _carried(where: Path | str) -> list[Path]:
    """The CARRIED files of a folder, each from the folder itself, else from the base a compact run was written against."""
    if not isinstance(where, Path):
        return []
    sources = [where, root_folder(where)]
    found = (next((s / name for s in sources if (s / name).is_file()), None) for name in CARRIED)
    return [file for file in found if file is not None]
