"""Builders for tests/cli/test_untrusted.py's cases on a saved run's base: finished runs (a compact SMF
run, a LoRA run) made once per world, and copies of them with their base or delta tampered with."""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from smf.cli import main
from smf.names import ADAPTER_BASE_FILE, DELTA_FILE, DELTA_WEIGHTS, MEMORY_FILE, WEIGHTS_FILE

SMALL = ["--steps", "2", "--batch-size", "2", "--max-length", "32"]


def finished(w, method: str) -> Path:
    """A finished run of `method` in the world (smf over retro, lora over plain), trained once."""
    out = w["root"] / f"finished_{method}"
    if not out.exists():
        model = w["retro"] if method == "smf" else w["plain"]
        extra = ["--rule", "kl", "--top-t", "8"] if method == "smf" else []
        assert main(["train", "--model", str(model), "--method", method, *extra, "--data", str(w["data"]), *SMALL, "--out", str(out)]) == 0
    return out


def run_copy(w, t: Path, method: str = "smf", **record) -> Path:
    """A copy of a finished run; `record` overrides keys of its base record (smf_delta.json or smf_base.json)."""
    copy = t / "run"
    shutil.copytree(finished(w, method), copy)
    if record:
        file = copy / "model" / (DELTA_FILE if method == "smf" else ADAPTER_BASE_FILE)
        meta = json.loads(file.read_text())
        meta.update({k: str(v) if isinstance(v, Path) else v for k, v in record.items()})
        file.write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))
    return copy


def rebased(w, t: Path, method: str, change) -> Path:
    """A run over a copy of its base, then `change(base_copy)` applied to that copy."""
    base = t / "base"
    shutil.copytree(w["retro"] if method == "smf" else w["plain"], base)
    copy = run_copy(w, t, method, base=base, base_absolute=base)
    change(base)
    return copy


def memory_setting(**settings):
    """Change the base's memory configuration only (its weights stay as they are)."""
    def change(base: Path):
        meta = json.loads((base / MEMORY_FILE).read_text())
        meta["memory"].update(settings)
        (base / MEMORY_FILE).write_text(json.dumps(meta))
    return change


def one_weight(base: Path):
    """Another value in one of the base's weights."""
    tensors = load_file(str(base / WEIGHTS_FILE))
    name = sorted(tensors)[0]
    tensors[name].view(-1)[0] += 1.0
    save_file(tensors, str(base / WEIGHTS_FILE), metadata={"format": "pt"})


def tampered_delta(w, t: Path, how: str) -> Path:
    """A compact run copy whose delta.safetensors was rewritten by hand (`how`)."""
    copy = run_copy(w, t)
    file = copy / "model" / DELTA_WEIGHTS
    tensors = load_file(str(file))
    rows = next(k for k in tensors if k.endswith("::rows"))
    name = rows.removesuffix("::rows")
    if how == "rows out of range":
        tensors[rows][0] = 10**6
    elif how == "negative rows":
        tensors[rows][0] = -(10**6)
    elif how == "float rows":
        tensors[rows] = tensors[rows].float()
    elif how == "values of another width":
        tensors[name + "::values"] = tensors[name + "::values"][:, :3].contiguous()
    elif how == "rows without values":
        del tensors[name + "::values"]
    elif how == "a layer that does not exist":
        tensors["model.layers.99.mlp.memory.values::rows"] = tensors.pop(rows)
        tensors["model.layers.99.mlp.memory.values::values"] = tensors.pop(name + "::values")
    elif how == "a whole tensor of another shape":
        tensors[name] = torch.zeros(3, 3)
    save_file(tensors, str(file), metadata={"format": "pt"})
    return copy


def export(copy: Path, t: Path) -> list[str]:
    return ["export", str(copy), "--out", str(t / "exported")]


def study(w, t: Path, *, base: Path | None = None, recorded=None, data: Path | None = None) -> list[str]:
    """`smf compare` on a small study of `base` (default: the world's plain model); with `recorded`,
    its --out already holds that study, started on the model whose fingerprint is `recorded`."""
    from smf.memory.delta import fingerprint
    from smf.study.config import StudyConfig

    text = f"model: {base or w['plain']}\nmethods: {{full: {{}}}}\ndata: {data or w['data']}\nevaluation: {{task: {{name: capitals, limit: 2, as: mine}}}}\n"
    config = t / "study.yaml"
    config.write_text(text)
    out = t / "s"
    if recorded is not None:
        import yaml

        out.mkdir()
        marker = StudyConfig.from_dict(yaml.safe_load(text)).to_dict()
        (out / "study.json").write_text(json.dumps({**marker, "base_fingerprint": fingerprint(recorded)}))
    return ["compare", "--config", str(config), "--out", str(out)]


def copied(w, t: Path, name: str) -> Path:
    shutil.copytree(w[name], t / name)
    return t / name
