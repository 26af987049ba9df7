"""Every file smf reads may be hostile, and every user may be careless: a table of cases, each run
through the real CLI (`smf.cli.main`) in-process, each ending in exit code 2, exactly one
`smf: error:` line, and every file under the case's folder and the shared models unchanged
(nothing created, nothing removed, nothing rewritten). Written as an attacker would try smf:
crafted checkpoints, YAML bombs, bases that changed under a saved run, text that is not what it
seems, outputs that already hold something.

A case is `name: (build, message)`: `build(world, tmp)` writes what the case needs under `tmp`
and returns the argv; `message` must appear in the error line.
"""

import hashlib
import json
import shutil
import time
import tracemalloc
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from smf.cli import main
from smf.errors import SmfError
from smf.methods import TrainConfig
from smf.train import train
from conftest import tiny_model
from test_faults import resume_args, world  # noqa: F401  (the models and runs the cases start from)
from test_train import examples
from untrusted_bases import copied, export, memory_setting, one_weight, rebased, run_copy, study, tampered_delta


def _write(tmp: Path, name: str, text: str | bytes) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text, encoding="utf-8")
    return path


def _yaml_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + f"\nmethods: {{lora: {{lr: *a{levels}}}}}\n"


class _CreatesFile:
    """Unpickled, it creates a file: the payload of a hostile checkpoint or weights file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _payload(path: Path, where: Path) -> None:
    """A torch pickle at `path` whose loading (weights_only=False) creates `where`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 2, "optimizer": _CreatesFile(where)}, path)


def _checkpoint(w, t, edit) -> list[str]:
    """`smf train --resume` of a copy of the unfinished run, its checkpoint folder edited by `edit(folder, t)`."""
    argv = resume_args(w, t)
    edit(t / "run_copy" / "checkpoint", t)
    return argv


def _old_pickle_state(folder: Path, t: Path) -> None:
    (folder / "state.safetensors").unlink()
    _payload(folder / "state.pt", t / "pwned")


def _state_structure(structure) -> callable:
    """An edit that replaces the checkpoint's training state with one tensor and `structure` as its JSON."""
    def edit(folder: Path, t: Path) -> None:
        text = structure if isinstance(structure, str) else json.dumps(structure)
        save_file({"t0": torch.zeros(2)}, str(folder / "state.safetensors"), metadata={"smf_state": text})
    return edit


def _pickled_model(w, t, source: str = "plain", keep: str = "pytorch_model.bin") -> str:
    """A copy of a world model whose weights are only a pickle with a payload."""
    copy = t / f"{source}_pickled"
    shutil.copytree(w[source], copy)
    for weights in copy.glob("*.safetensors"):
        weights.unlink()
    _payload(copy / keep, t / "pwned")
    return str(copy)


def _pickled_run(w, t) -> str:
    """A copy of the unfinished run with a model/ folder whose weights are a pickle."""
    copy = t / "run_pickled"
    shutil.copytree(w["run"], copy)
    shutil.copytree(w["plain"], copy / "model")
    for weights in (copy / "model").glob("*.safetensors"):
        weights.unlink()
    _payload(copy / "model" / "pytorch_model.bin", t / "pwned")
    return str(copy)


def _replaced(w, t, folder: str, file: str, text: str | bytes) -> str:
    """A copy of a world folder with one file's content replaced."""
    copy = t / f"{folder}_replaced"
    shutil.copytree(w[folder], copy)
    _write(copy, file, text)
    return str(copy)


def _compare(t, text: str | bytes) -> list[str]:
    return ["compare", "--config", str(_write(t, "s.yaml", text)), "--out", f"{t}/out"]


def _train_config(w, t, text: str | bytes) -> list[str]:
    return ["train", "--model", str(w["plain"]), "--data", str(w["data"]), "--config", str(_write(t, "c.yaml", text)), "--out", f"{t}/out"]


def _eval_tasks(w, t, text: str | bytes) -> list[str]:
    return ["eval", "--model", str(w["plain"]), "--tasks-file", str(_write(t, "tasks.yaml", text)), "--out", f"{t}/out.json"]


_DEEP = "[" * 100_000 + "]" * 100_000
_MANY_ALIASES = "a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]\n"
_HUGE = "# padding\n" * 500_000 + "methods: {lora: {}}\n"  # 5 MB


_LONG_ROW = '{"text": "' + "a" * 64_000_000 + '"}\n'  # one line of JSON over MAX_LINE_BYTES (64 MB)


def _data(w, t, name: str, text: str | bytes, command: str = "train") -> list[str]:
    """`smf train` (or `smf learn`) on the data file `name` holding `text`."""
    data = str(_write(t, name, text))
    if command == "learn":
        return ["learn", "--data", data, "--model", str(w["plain"]), "--out", f"{t}/out"]
    return ["train", "--model", str(w["plain"]), "--method", "full", "--data", data, "--steps", "1", "--out", f"{t}/out"]


def _resume_with(w, t, name: str, text) -> list[str]:
    """`smf train --resume` of a copy of the unfinished run whose file `name` holds `text` (or `text(old)`)."""
    argv = resume_args(w, t)
    file = t / "run_copy" / name
    _write(t / "run_copy", name, text(file.read_text()) if callable(text) else text)
    return argv


def _study_marker(w, t, text: str) -> list[str]:
    """`smf compare` whose --out holds a study begun on the plain model, its study.json then replaced by `text`."""
    argv = study(w, t, recorded=w["plain"])
    _write(t / "s", "study.json", text)
    return argv


def _poison_file(file: Path, name: str, value: float = float("nan")) -> None:
    """One number of the tensor `name` in the safetensors `file` set to `value` (NaN: a damaged or hostile file)."""
    tensors = load_file(str(file))
    tensors[name].view(-1)[5] = value
    save_file(tensors, str(file), metadata={"format": "pt"})


def _poisoned(w, t, folder: str, name: str, value: float = float("nan")) -> Path:
    """A copy of a world model whose weight `name` holds one `value`."""
    copy = t / f"{folder}_poisoned"
    shutil.copytree(w[folder], copy)
    _poison_file(copy / "model.safetensors", name, value)
    return copy


def _remade(w, t, **settings) -> Path:
    """A copy of the world's retrofit (weights and background as they are) with other memory settings."""
    copy = copied(w, t, "retro")
    memory_setting(**settings)(copy)
    return copy


def _train_flags(w, t, *flags: str) -> list[str]:
    return ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(w["data"]), "--steps", "1", *flags, "--out", f"{t}/out"]


def _retrofit_flags(w, t, *flags: str) -> list[str]:
    return ["retrofit", "--model", str(w["plain"]), "--layers", "1", *flags, "--out", f"{t}/out"]


CASES = {
    # --- code execution and bounded parsing ---
    "train --lr inf": (lambda w, t: _train_flags(w, t, "--lr", "inf"), "lr: expected a finite number"),
    "train --lr nan": (lambda w, t: _train_flags(w, t, "--lr", "nan"), "lr: expected a finite number"),
    "train --lr 1e999 (inf once read)": (lambda w, t: _train_flags(w, t, "--lr", "1e999"), "finite"),
    "train --lr -1": (lambda w, t: _train_flags(w, t, "--lr", "-1"), "learning rate must be > 0"),
    "train --lr 0": (lambda w, t: _train_flags(w, t, "--lr", "0"), "learning rate must be > 0"),
    "train --betas 1.5,0.9": (lambda w, t: _train_flags(w, t, "--betas", "1.5,0.9"), "betas must be two numbers in [0, 1)"),
    "train --betas 0.9,1": (lambda w, t: _train_flags(w, t, "--betas", "0.9,1"), "betas must be two numbers in [0, 1)"),
    "train --betas -0.1,0.9": (lambda w, t: _train_flags(w, t, "--betas=-0.1,0.9"), "betas must be"),
    "train --betas nan,0.9": (lambda w, t: _train_flags(w, t, "--betas", "nan,0.9"), "finite"),
    "train --weight-decay nan": (lambda w, t: _train_flags(w, t, "--weight-decay", "nan"), "weight_decay: expected a finite number"),
    "train --weight-decay -1": (lambda w, t: _train_flags(w, t, "--weight-decay", "-1"), "weight_decay must be >= 0"),
    "train --max-grad-norm inf": (lambda w, t: _train_flags(w, t, "--max-grad-norm", "inf"), "finite"),
    "train --epochs inf": (lambda w, t: _train_flags(w, t, "--epochs", "inf"), "finite"),
    "train --config, lr: .inf": (lambda w, t: _train_config(w, t, "method: full\nlr: .inf\n"), "finite"),
    "train --config, lr: .nan": (lambda w, t: _train_config(w, t, "method: full\nlr: .nan\n"), "finite"),
    "train --config, lr: '1e999' as text": (lambda w, t: _train_config(w, t, "method: full\nlr: 1e999\n"), "finite"),
    "train --config, LoRA dropout .nan": (lambda w, t: _train_config(w, t, "method: lora\ndropout: .nan\n"), "finite"),
    "retrofit --value-init-std inf": (lambda w, t: _retrofit_flags(w, t, "--value-init-std", "inf"), "value_init_std: expected a finite number"),
    "retrofit --value-init-std nan": (lambda w, t: _retrofit_flags(w, t, "--value-init-std", "nan"), "finite"),
    "retrofit --value-init-std -1": (lambda w, t: _retrofit_flags(w, t, "--value-init-std", "-1"), "init std must be >= 0"),
    "retrofit --scale nan": (lambda w, t: _retrofit_flags(w, t, "--scale", "nan"), "scale: expected a finite number"),
    "retrofit --scale -inf": (lambda w, t: _retrofit_flags(w, t, "--scale=-inf"), "finite"),
    "learn --lr inf": (lambda w, t: ["learn", "--data", str(w["data"]), "--model", str(w["plain"]), "--lr", "inf", "--out", f"{t}/out"], "finite"),
    "learn --keep-weight nan": (lambda w, t: ["learn", "--data", str(w["data"]), "--model", str(w["plain"]), "--keep-weight", "nan", "--out", f"{t}/out"], "finite"),
    "compare, a memory init of .nan": (lambda w, t: _compare(t, "methods: {smf: {}}\nmemory: {value_init_std: .nan}\n"), "finite"),
    "compare, a tolerance of .inf": (lambda w, t: _compare(t, "methods: {lora: {}}\ntolerance: .inf\n"), "finite"),
    "compare, a YAML file of 5 MB": (lambda w, t: _compare(t, _HUGE), "4 MB"),
    "compare, YAML with 101 aliases": (lambda w, t: _compare(t, _MANY_ALIASES), "100 aliases"),
    "compare, a YAML alias inside the value it names": (lambda w, t: _compare(t, "methods: &m {lora: {lr: [*m]}}\n"), "alias"),
    "compare, YAML nested 100000 deep": (lambda w, t: _compare(t, "methods: " + _DEEP + "\n"), "nested too deeply"),
    "compare, a 1 MB value in one key": (lambda w, t: _compare(t, "methods: {lora: {lr: " + "x" * 1_000_000 + "}}\n"), "lr"),
    "compare, a 1 MB key": (lambda w, t: _compare(t, "methods: {lora: {}}\n? " + "k" * 1_000_000 + "\n: 1\n"), "unknown key"),
    "compare, a python tag that would run a command": (lambda w, t: _compare(t, "methods: !!python/object/apply:os.system [touch pwned]\n"), "YAML"),
    "train --config, a YAML alias bomb": (lambda w, t: _train_config(w, t, _yaml_bomb().replace("methods: {lora: {lr: *a9}}", "lr: *a9")), "alias"),
    "train --config, a file of 5 MB": (lambda w, t: _train_config(w, t, "# padding\n" * 500_000), "4 MB"),
    "train --config, JSON nested 100000 deep": (lambda w, t: _train_config(w, t, '{"lr": ' + _DEEP + "}"), "nested too deeply"),
    "train --config, not UTF-8": (lambda w, t: _train_config(w, t, b"lr: \xff\xfe\n"), "UTF-8"),
    "train --config, a list of 50000 as the learning rate": (lambda w, t: _train_config(w, t, "lr: [" + "1, " * 50_000 + "1]\n"), "lr"),
    "eval --tasks-file, a YAML alias bomb": (lambda w, t: _eval_tasks(w, t, _yaml_bomb().replace("methods: {lora: {lr: *a9}}", "tasks: *a9")), "alias"),
    "eval --tasks-file, a file of 5 MB": (lambda w, t: _eval_tasks(w, t, "# padding\n" * 500_000), "4 MB"),
    "eval --tasks-file, a folder": (lambda w, t: ["eval", "--model", str(w["plain"]), "--tasks-file", str(t), "--out", f"{t}/out.json"], "is a folder"),
    "info, smf_memory.json nested 100000 deep": (lambda w, t: ["info", _replaced(w, t, "retro", "smf_memory.json", _DEEP)], "nested too deeply"),
    "info, smf_memory.json with a 5000-digit number": (lambda w, t: ["info", _replaced(w, t, "retro", "smf_memory.json", "1" * 5000)], "smf_memory.json"),
    "info, config.json of 70 MB": (lambda w, t: ["info", _replaced(w, t, "retro", "config.json", " " * 70_000_000 + "{}")], "64 MB"),
    "resume, an old pickled state.pt whose payload would create a file": (lambda w, t: _checkpoint(w, t, _old_pickle_state), "older smf"),
    "resume, state.safetensors that is a pickle with a payload": (lambda w, t: _checkpoint(w, t, lambda f, t: _payload(f / "state.safetensors", t / "pwned")), "state.safetensors"),
    "resume, trainable.safetensors that is a pickle with a payload": (lambda w, t: _checkpoint(w, t, lambda f, t: _payload(f / "trainable.safetensors", t / "pwned")), "trainable.safetensors"),
    "resume, a training state that names a missing tensor": (lambda w, t: _checkpoint(w, t, _state_structure({"tensor": "t9"})), "missing tensor"),
    "resume, a training state nested 100000 deep": (lambda w, t: _checkpoint(w, t, _state_structure("[" * 100000 + "]" * 100000)), "state.safetensors"),
    "resume, a training state naming a Python object": (lambda w, t: _checkpoint(w, t, _state_structure({"object": "os.system"})), "state.safetensors"),
    "resume, a training state without its structure": (lambda w, t: _checkpoint(w, t, lambda f, t: save_file({"t0": torch.zeros(1)}, str(f / "state.safetensors"))), "no training state"),
    "resume, a training state of another shape (no optimizer)": (lambda w, t: _checkpoint(w, t, _state_structure({"dict": [["step", {"int": "2"}]]})), "state.safetensors"),
    "resume, a training state whose step is a string": (lambda w, t: _checkpoint(w, t, _state_structure({"int": "two"})), "state.safetensors"),
    "info, a model folder with only pickled weights": (lambda w, t: ["info", _pickled_model(w, t)], "convert it to safetensors"),
    "eval, a model folder with only pickled weights": (lambda w, t: ["eval", "--model", _pickled_model(w, t), "--tasks-file", str(w["tasks"]), "--out", f"{t}/out.json"], "convert it to safetensors"),
    "train, a model folder with only pickled weights": (lambda w, t: ["train", "--model", _pickled_model(w, t), "--method", "full", "--data", str(w["data"]), "--steps", "1", "--out", f"{t}/out"], "convert it to safetensors"),
    "retrofit, a model folder with only a .pt checkpoint": (lambda w, t: ["retrofit", "--model", _pickled_model(w, t, keep="model.pt"), "--out", f"{t}/out"], "convert it to safetensors"),
    "eval, a run folder whose model/ has only pickled weights": (lambda w, t: ["eval", "--model", _pickled_run(w, t), "--tasks-file", str(w["tasks"]), "--out", f"{t}/out.json"], "convert it to safetensors"),
    "compare, a YAML alias bomb": (lambda w, t: ["compare", "--config", str(_write(t, "s.yaml", _yaml_bomb())), "--out", f"{t}/out"], "alias"),
    # --- a saved run's base, by content ---
    "run base, a study resumed on another model saved at its base path": (lambda w, t: study(w, t, base=copied(w, t, "plain"), recorded=w["retro"]), "another base model"),
    "run base, a study resumed after its base's weights changed": (lambda w, t: study(w, t, recorded=(lambda b: (one_weight(b), b)[1])(copied(w, t, "plain"))), "another base model"),
    "run base, a study grown on a base re-made with other memory settings": (lambda w, t: study(w, t, base=w["retro"], recorded=w["other"]), "another base model"),
    "run base, compare refused for its model leaves no study.json": (lambda w, t: study(w, t, base=t / "missing_model"), "does not exist"),
    "run base, compact run over a base re-made with another memory seed": (lambda w, t: export(rebased(w, t, "smf", memory_setting(seed=1)), t), "another base than"),
    "run base, compact run over a base re-made with another top-k": (lambda w, t: export(rebased(w, t, "smf", memory_setting(topk=2)), t), "another base than"),
    "run base, compact run over a base with one weight changed": (lambda w, t: export(rebased(w, t, "smf", one_weight), t), "another base than"),
    "run base, compact run pointed at the other-seed retrofit": (lambda w, t: export(run_copy(w, t, base=w["other"], base_absolute=w["other"]), t), "another base than"),
    "run base, compact run pointed at a plain model": (lambda w, t: export(run_copy(w, t, base=w["plain"], base_absolute=w["plain"]), t), "another base than"),
    "run base, compact run whose base folder vanished": (lambda w, t: export(run_copy(w, t, base="../../gone", base_absolute=t / "gone"), t), "base model is gone"),
    "run base, compact run pointing outside with ..": (lambda w, t: export(run_copy(w, t, base="../../../../../../../../etc", base_absolute="/etc"), t), "base model is gone"),
    "run base, compact run pointing at a non-model folder": (lambda w, t: export(run_copy(w, t, base=w["root"], base_absolute=w["root"]), t), "base model is gone"),
    "run base, smf_delta.json base not text": (lambda w, t: export(run_copy(w, t, base=7), t), "not an smf record"),
    "run base, smf_delta.json without a fingerprint": (lambda w, t: export(run_copy(w, t, base_fingerprint=None), t), "not an smf record"),
    "run base, smf_delta.json with a forged fingerprint": (lambda w, t: export(run_copy(w, t, base_fingerprint="0" * 64), t), "another base than"),
    "run base, smf info on a compact run over another base": (lambda w, t: ["info", str(rebased(w, t, "smf", memory_setting(topk=2)) / "model")], "another base than"),
    "run base, smf eval of a compact run over another base": (lambda w, t: ["eval", "--model", str(rebased(w, t, "smf", one_weight)), "--tasks-file", str(w["tasks"]), "--out", f"{t}/out.json"], "another base than"),
    "run base, smf train on from a compact run over another base": (lambda w, t: ["train", "--model", str(rebased(w, t, "smf", memory_setting(seed=1))), "--method", "smf", "--data", str(w["data"]), "--steps", "1", "--out", f"{t}/out"], "another base than"),
    "run base, delta rows out of range": (lambda w, t: export(tampered_delta(w, t, "rows out of range"), t), "outside its"),
    "run base, delta rows negative": (lambda w, t: export(tampered_delta(w, t, "negative rows"), t), "outside its"),
    "run base, delta rows as floats": (lambda w, t: export(tampered_delta(w, t, "float rows"), t), "do not fit"),
    "run base, delta values of another width": (lambda w, t: export(tampered_delta(w, t, "values of another width"), t), "do not fit"),
    "run base, delta rows without values": (lambda w, t: export(tampered_delta(w, t, "rows without values"), t), "do not fit"),
    "run base, delta changes a layer that does not exist": (lambda w, t: export(tampered_delta(w, t, "a layer that does not exist"), t), "does not have"),
    "run base, delta whole tensor of another shape": (lambda w, t: export(tampered_delta(w, t, "a whole tensor of another shape"), t), "is damaged"),
    "run base, LoRA run whose base was replaced": (lambda w, t: export(rebased(w, t, "lora", one_weight), t), "another base than"),
    "run base, LoRA run pointed at another model": (lambda w, t: export(run_copy(w, t, "lora", base=w["retro"], base_absolute=w["retro"]), t), "another base than"),
    "run base, LoRA run whose base vanished": (lambda w, t: export(run_copy(w, t, "lora", base="../../gone", base_absolute=t / "gone"), t), "base model is gone"),
    "run base, LoRA run with a forged fingerprint": (lambda w, t: ["eval", "--model", str(run_copy(w, t, "lora", base_fingerprint="f" * 64)), "--tasks-file", str(w["tasks"]), "--out", f"{t}/out.json"], "another base than"),
    # --- text input, truncation, outputs, one error path ---
    "learn --out locked, a running sitting's staging folder kept": (lambda w, t: (_write(t, ".out.lock", "1\n"), _write(t, ".out.learning/learn_run/log.jsonl", "{}\n"), ["learn", "--data", str(w["data"]), "--model", str(w["plain"]), "--out", f"{t}/out"])[2], "in use"),
    "heal --out locked by a running command": (lambda w, t: (_write(t, ".out.lock", "1\n"), ["heal", "--model", str(w["retro"]), "--steps", "1", "--out", f"{t}/out"])[1], "in use"),
    "train, YAML syntax inside a data option": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", "facts:n_facts=[1", "--steps", "1", "--out", f"{t}/out"], "not valid YAML"),
    "train, YAML syntax inside a data option of a file-like name": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", "facts:seed={a", "--steps", "1", "--out", f"{t}/out"], "not valid YAML"),
    "train, a negative seed": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(w["data"]), "--steps", "1", "--seed", "-1", "--out", f"{t}/out"], "seed must be between 0"),
    "train, a seed past 2**32": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(w["data"]), "--steps", "1", "--seed", str(2**32), "--out", f"{t}/out"], "seed must be between 0"),
    "retrofit, an impossible allocation": (lambda w, t: ["retrofit", "--model", str(w["plain"]), "--layers", "1", "--slots", str(10**18), "--out", f"{t}/out"], "not enough memory"),
    "ask, a hub id not cached while offline": (lambda w, t: ["ask", "--model", "smf-h7-nobody/not-a-model", "hi"], "hub cannot be reached"),
    "train, a hub id not cached while offline": (lambda w, t: ["train", "--model", "smf-h7-nobody/not-a-model", "--method", "full", "--data", str(w["data"]), "--steps", "1", "--out", f"{t}/out"], "hub cannot be reached"),
    "train --out locked by a running command": (lambda w, t: (_write(t, ".out.lock", "1\n"), ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(w["data"]), "--steps", "1", "--out", f"{t}/out"])[1], "in use by process 1"),
    "train --resume locked by a running command": (lambda w, t: (resume_args(w, t), _write(t, ".run_copy.lock", "1\n"))[0], "in use by process 1"),
    "learn --out locked by a running command": (lambda w, t: (_write(t, ".out.lock", "1\n"), ["learn", "--data", str(w["data"]), "--model", str(w["plain"]), "--out", f"{t}/out"])[1], "in use"),
    "learn --out locked, the lock being written": (lambda w, t: (_write(t, ".out.lock", ""), ["learn", "--data", str(w["data"]), "--model", str(w["plain"]), "--out", f"{t}/out"])[1], "in use by another command"),
    "compare --out locked by a running command": (lambda w, t: (_write(t, ".out.lock", "1\n"), ["compare", "--config", str(_write(t, "s.yaml", f"model: {w['plain']}\nmethods: {{full: {{}}}}\ndata: {w['data']}\nevaluation: {{task: {{name: facts, n_facts: 4}}}}\n")), "--out", f"{t}/out"])[1], "in use"),
    "eval --out is a user's JSON file": (lambda w, t: ["eval", "--model", str(w["plain"]), "--tasks-file", str(w["tasks"]), "--out", str(_write(t, "notes.json", '{"mine": 1}'))], "already exists"),
    "eval --out is a user's text file": (lambda w, t: ["eval", "--model", str(w["plain"]), "--tasks-file", str(w["tasks"]), "--out", str(_write(t, "thesis.tex", "\\section{x}"))], "already exists"),
    "inspect --out holds a user's files": (lambda w, t: ["inspect", str(w["retro"]), "--out", str(_write(t, "o/notes.txt", "x").parent)], "did not write"),
    "inspect --out is a user's file": (lambda w, t: ["inspect", str(w["retro"]), "--out", str(_write(t, "o.png", b"\x89PNG"))], "is a file"),
    "inspect --out holds an inspect.json smf did not write": (lambda w, t: ["inspect", str(w["retro"]), "--out", str(_write(t, "o/inspect.json", '{"mine": 1}').parent)], "not a report"),
    "export --out is a user's file": (lambda w, t: ["export", str(w["retro"]), "--out", str(_write(t, "m.safetensors", b"x"))], "already exists"),
    "learn --out is a user's file": (lambda w, t: ["learn", "--data", str(w["data"]), "--model", str(w["plain"]), "--out", str(_write(t, "out", "x"))], "is a file"),
    "train, every question longer than max-length": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(_write(t, "d.jsonl", '{"prompt": "' + "a long question " * 40 + '", "target": " yes"}\n')), "--steps", "1", "--max-length", "16", "--out", f"{t}/out"], "max_length"),
    "train --data in capitals (D.TXT) read as a file": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(_write(t, "D.TXT", "\n \n")), "--steps", "1", "--out", f"{t}/out"], "is empty"),
    "train --data a .txt holding only a byte-order mark": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(_write(t, "d.txt", b"\xef\xbb\xbf\n")), "--steps", "1", "--out", f"{t}/out"], "is empty"),
    "learn --data a facts file holding only a byte-order mark": (lambda w, t: ["learn", "--data", str(_write(t, "f.txt", b"\xef\xbb\xbf\r\n")), "--model", str(w["plain"]), "--out", f"{t}/out"], "no facts"),
    "learn --data FACTS.JSONL in capitals, a bad row": (lambda w, t: ["learn", "--data", str(_write(t, "FACTS.JSONL", '{"question": "Who?"}\n')), "--model", str(w["plain"]), "--out", f"{t}/out"], "row 1 needs"),
    "train, a JSONL string holding U+2028 stays one row": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(_write(t, "d.jsonl", '{"target": "one\u2028fact"}\n{"x": 1}\n')), "--steps", "1", "--out", f"{t}/out"], "row 2 needs"),
    "learn, a JSONL after a BOM, a bad second row": (lambda w, t: ["learn", "--data", str(_write(t, "f.jsonl", '\ufeff{"text": "Kelbrin is in Oshu."}\n{"question": "Who?"}\n')), "--model", str(w["plain"]), "--out", f"{t}/out"], "row 2 needs"),
    "train --data an existing path holding a colon": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(_write(t, "a:b=1.txt", "")), "--steps", "1", "--out", f"{t}/out"], "is empty"),
    "resume, a damaged line inside the log": (lambda w, t: (resume_args(w, t), (t / "run_copy" / "log.jsonl").write_text("{not json\n" + (t / "run_copy" / "log.jsonl").read_text()))[0], "line 1 is not valid JSON"),
    "resume onto its retrofit re-made with another top-k (the same weights)": (lambda w, t: resume_args(w, t, __model=str(_remade(w, t, topk=2))), "memory settings"),
    "resume onto its retrofit re-made with another memory seed (the same weights)": (lambda w, t: resume_args(w, t, __model=str(_remade(w, t, seed=1))), "memory settings"),
    # --- weights that are not numbers: the model folder's, not the learning rate's ---
    "train on a retrofit whose memory values hold NaN": (lambda w, t: ["train", "--model", str(_poisoned(w, t, "retro", "model.layers.3.mlp.memory.values")), "--method", "smf", "--data", str(w["data"]), "--steps", "1", "--out", f"{t}/out"], "retro_poisoned holds weights that are not finite numbers (model.layers.3.mlp.memory.values holds inf or NaN)"),
    "train --method full on a model folder with an inf weight": (lambda w, t: ["train", "--model", str(_poisoned(w, t, "plain", "model.layers.0.mlp.down_proj.weight", float("inf"))), "--method", "full", "--data", str(w["data"]), "--steps", "1", "--out", f"{t}/out"], "plain_poisoned holds weights that are not finite numbers (model.layers.0.mlp.down_proj.weight holds inf"),
    "train --method lora on a retrofit whose memory values hold NaN": (lambda w, t: ["train", "--model", str(_poisoned(w, t, "retro", "model.layers.1.mlp.memory.values")), "--method", "lora", "--data", str(w["data"]), "--steps", "1", "--out", f"{t}/out"], "holds weights that are not finite numbers (model.layers.1.mlp.memory.values"),
    "heal a retrofit whose memory keys hold NaN": (lambda w, t: ["heal", "--model", str(_poisoned(w, t, "retro", "model.layers.1.mlp.memory.keys")), "--steps", "1", "--out", f"{t}/out"], "holds weights that are not finite numbers (model.layers.1.mlp.memory.keys"),
    "resume, a checkpoint whose trained values hold NaN": (lambda w, t: _checkpoint(w, t, lambda f, t: _poison_file(f / "trainable.safetensors", "model.layers.1.mlp.memory.values")), "checkpoint holds weights that are not finite numbers (model.layers.1.mlp.memory.values"),
    # --- every file smf reads is bounded: data files, logs, records ---
    "train --data a JSONL row over 64 MB": (lambda w, t: _data(w, t, "d.jsonl", _LONG_ROW), "line 1 is over 64 MB"),
    "train --data a .json of JSON Lines, a row over 64 MB": (lambda w, t: _data(w, t, "d.json", '{"text": "ok"}\n' + _LONG_ROW), "line 2 is over 64 MB"),
    "learn --data a JSONL fact over 64 MB": (lambda w, t: _data(w, t, "f.jsonl", _LONG_ROW, "learn"), "line 1 is over 64 MB"),
    "train --data a JSONL row nested 100000 deep": (lambda w, t: _data(w, t, "d.jsonl", '{"text": "ok"}\n' + _DEEP + "\n"), "line 2: not valid JSON (nested too deeply)"),
    "train --data a JSON array nested 100000 deep": (lambda w, t: _data(w, t, "d.json", _DEEP), "nested too deeply"),
    "train --data a JSONL row with a 5000-digit number": (lambda w, t: _data(w, t, "d.jsonl", '{"target": ' + "1" * 5000 + "}\n"), "line 1: not valid JSON"),
    "resume, a log line over 64 MB": (lambda w, t: _resume_with(w, t, "log.jsonl", lambda old: _LONG_ROW + old), "line 1 is over 64 MB"),
    "resume, a log line nested 100000 deep": (lambda w, t: _resume_with(w, t, "log.jsonl", lambda old: _DEEP + "\n" + old), "line 1 is not valid JSON"),
    "resume, fingerprint.json of 17 MB": (lambda w, t: _resume_with(w, t, "fingerprint.json", " " * 17_000_000 + "{}"), "over 16 MB"),
    "compare, study.json of 17 MB when resuming": (lambda w, t: _study_marker(w, t, " " * 17_000_000 + "{}"), "over 16 MB"),
    "compare, study.json nested 100000 deep when resuming": (lambda w, t: _study_marker(w, t, _DEEP), "nested too deeply"),
    "eval --out is a JSON file nested 100000 deep": (lambda w, t: ["eval", "--model", str(w["plain"]), "--tasks-file", str(w["tasks"]), "--out", str(_write(t, "deep.json", _DEEP))], "already exists"),
    "inspect --out holds an inspect.json nested 100000 deep": (lambda w, t: ["inspect", str(w["retro"]), "--out", str(_write(t, "o/inspect.json", _DEEP).parent)], "not a report"),
}


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under `roots` → its SHA-256, every folder → 'dir'."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            out[str(path)] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_in_one_line_and_nothing_changes(name, world, tmp_path, capsys):  # noqa: F811
    build, message = CASES[name]
    argv = build(world, tmp_path)
    before = snapshot(tmp_path, world["root"])
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("smf: error:")]
    assert code == 2, (code, err)
    assert len(errors) == 1 and message.lower() in errors[0].lower(), err
    assert snapshot(tmp_path, world["root"]) == before, "a refused command changed files"


def test_the_table_is_large():
    assert len(CASES) >= 60


def test_a_crafted_checkpoint_runs_nothing(world, tmp_path, capsys):  # noqa: F811
    """The payload is live (torch.load with weights_only=False runs it), and resuming never does."""
    probe = tmp_path / "probe"
    _payload(tmp_path / "probe.pt", probe)
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert probe.exists()
    for edit in (_old_pickle_state, lambda f, t: _payload(f / "state.safetensors", t / "pwned")):
        case = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        case.mkdir()
        assert main(_checkpoint(world, case, edit)) == 2
        assert not (case / "pwned").exists()


def test_a_yaml_alias_bomb_is_refused_within_2_s_and_200_mb(tmp_path, capsys):
    argv = _compare(tmp_path, _yaml_bomb())
    tracemalloc.start()
    start = time.monotonic()
    try:
        code = main(argv)
        elapsed, peak = time.monotonic() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 2 and "alias" in capsys.readouterr().err
    assert elapsed < 2 and peak < 200_000_000, (elapsed, peak)


@pytest.mark.parametrize("name", ["compare, a 1 MB value in one key", "compare, a 1 MB key", "train --config, a list of 50000 as the learning rate"])
def test_an_error_line_quotes_a_short_excerpt(name, world, tmp_path, capsys):  # noqa: F811
    capsys.readouterr()
    assert main(CASES[name][0](world, tmp_path)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert len(line) < 500, line[:600]


def test_a_model_whose_weights_are_not_all_numbers_is_refused_before_training(tmp_path, tokenizer):
    """NaN in a weight no step reaches, before any step: the model's doing, said so (not the learning rate's)."""
    model = tiny_model(vocab_size=len(tokenizer))
    model.register_parameter("unreached", torch.nn.Parameter(torch.full((2,), float("nan"))))
    config = TrainConfig.from_dict({"method": "full", "steps": 1, "batch_size": 4, "max_length": 64, "lr": 1e-3})
    with pytest.raises(SmfError, match=r"the model holds weights that are not finite numbers \(unreached holds inf or NaN\).*nothing was trained") as e:
        train(model, tokenizer, examples(), config, tmp_path / "run", progress=False)
    assert "--lr" not in str(e.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["train on a retrofit whose memory values hold NaN", "train --method full on a model folder with an inf weight"])
def test_a_model_folder_of_non_finite_weights_is_not_blamed_on_the_learning_rate(name, world, tmp_path, capsys):  # noqa: F811
    capsys.readouterr()
    assert main(CASES[name][0](world, tmp_path)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "the model folder" in line and "--lr" not in line, line


def test_weights_that_are_not_all_finite_are_never_saved(tmp_path, tokenizer):
    """A finite loss at every step does not make every weight a number (an update of inf on the last step):
    train() refuses in one line, naming the learning rate, and writes no model."""
    model = tiny_model(vocab_size=len(tokenizer))

    def last_step(m, step):  # after the last step's update, as an update of inf would leave it
        with torch.no_grad():
            m.model.norm.weight[0] = float("inf")
        return {}

    config = TrainConfig.from_dict({"method": "full", "steps": 1, "batch_size": 4, "max_length": 64, "lr": 1e-3})
    with pytest.raises(SmfError, match=r"the learning rate \(--lr 0.001\) made the trained weights non-finite \(model.norm.weight "
                                       r"holds inf or NaN\); no model was saved; start again with a lower --lr"):
        train(model, tokenizer, examples(), config, tmp_path / "run", eval_fn=last_step, progress=False)
    assert not (tmp_path / "run" / "model").exists() and not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("method, flags, how", [
    ("full", [], "step 1: the learning rate"),  # Adam's step size overflows float32 at once
    ("lora", [], "step 1: the learning rate"),
    ("smf", [], "step 3: the training loss is nan (not a finite number): the learning rate"),  # SMF's rows reach inf on step 2
    ("smf", ["--checkpoint-every", "1"], "step 2: the learning rate"),  # found before a checkpoint of them replaces step 1's
], ids=["full", "lora", "smf", "smf, a checkpoint every step"])
def test_a_learning_rate_that_makes_the_weights_non_finite_is_named(method, flags, how, world, tmp_path, capsys):  # noqa: F811
    model = world["retro"] if method == "smf" else world["plain"]
    capsys.readouterr()
    code = main(["train", "--model", str(model), "--method", method, "--data", str(world["data"]), "--steps", "3", "--lr", "3e38",
                 "--batch-size", "2", "--max-length", "32", *flags, "--out", f"{tmp_path}/out"])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("smf: error:")]
    assert code == 2 and len(errors) == 1, err
    assert how in errors[0] and "the learning rate (--lr 3e+38) made the weights non-finite" in errors[0], errors[0]
    assert "start again with a lower --lr" in errors[0] and not (tmp_path / "out" / "model").exists()
    if flags:
        assert "its checkpoint at step 1 is kept" in errors[0], errors[0]
        assert torch.isfinite(load_file(str(tmp_path / "out" / "checkpoint" / "trainable.safetensors"))["model.layers.1.mlp.memory.values"]).all()


def _sparse(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes no room on disk (and no time to write): reading it would take seconds."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "d.txt", "d.csv"])
def test_a_data_file_over_2_gb_is_refused_before_it_is_read(name, world, tmp_path, capsys):  # noqa: F811
    """By its size, before a byte is read: `smf train --data` (and `source:` files, which the same reader reads)."""
    from smf.data.rows import read_rows_file

    data = _sparse(tmp_path / name, 2_000_000_001)
    capsys.readouterr()
    tracemalloc.start()
    start = time.monotonic()
    try:
        if name == "d.csv":
            with pytest.raises(SmfError, match=r"d.csv: over 2 GB, more than a data file holds; split it"):
                read_rows_file(data)
        else:
            assert main(["train", "--model", str(world["plain"]), "--method", "full", "--data", str(data), "--steps", "1",
                         "--out", f"{tmp_path}/out"]) == 2
            (line,) = capsys.readouterr().err.strip().splitlines()
            assert f"{data}: over 2 GB, more than a data file holds; split it" in line, line
        elapsed, peak = time.monotonic() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 5 and peak < 50_000_000, (elapsed, peak)  # read, 2 GB takes seconds and (decoded) gigabytes
    assert not (tmp_path / "out").exists()


def test_learn_refuses_a_facts_file_over_2_gb(world, tmp_path, capsys):  # noqa: F811
    data = _sparse(tmp_path / "facts.txt", 2_000_000_001)
    capsys.readouterr()
    assert main(["learn", "--data", str(data), "--model", str(world["plain"]), "--out", f"{tmp_path}/out"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "facts.txt: over 2 GB" in line and not (tmp_path / "out").exists()


def test_a_kept_answers_file_over_64_mb_is_refused_in_one_line(tmp_path):
    """smf learn's kept answers travel with the model folder, which anyone may hand over."""
    from smf.names import KEPT_FILE
    from smf.use.learn.folder import read_kept

    _sparse(tmp_path / KEPT_FILE, 64_000_001)
    with pytest.raises(SmfError, match=f"{KEPT_FILE}: over 64 MB, more than a kept answers file holds; delete it"):
        read_kept(tmp_path)


@pytest.mark.parametrize("text, message", [
    ('{"step": 1, "loss": 2.0}\n' + _DEEP + "\n", "line 2 is not valid JSON"),
    ('{"step": 1, "loss": 2.0}\n[1]\n', "line 2 is not a log record"),
    ('{"step": 1, "loss": ' + "1" * 5000 + "}\n", "line 1 is not valid JSON"),
    (_LONG_ROW, "line 1 is over 64 MB"),
], ids=["nested 100000 deep", "not a record", "a 5000-digit number", "a line over 64 MB"])
def test_a_study_reads_a_finished_runs_log_bounded_and_in_one_line(text, message, tmp_path):
    """The log beside a finished run of a study, read when its results are gathered (also on a resumed study)."""
    from smf.study.results import read_log

    log = _write(tmp_path, "log.jsonl", text)
    with pytest.raises(SmfError, match=f"{message}.*remove the run"):
        read_log(log, "remove the run folder to run it again")
    assert read_log(_write(tmp_path, "ok.jsonl", '{"step": 1, "loss": 2.0}\n\n'), "") == [{"step": 1, "loss": 2.0}]


def _rewritten(file: Path) -> None:
    """The same safetensors content in other bytes: its header's entries in another order, as another writer may put them."""
    data = file.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    text = json.dumps(dict(reversed(list(header.items())))).encode()
    text += b" " * (-len(text) % 8)
    file.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n :])


def test_a_run_resumes_onto_its_model_by_content_not_by_bytes(world, tmp_path, capsys):  # noqa: F811
    """A saved run depends on its model by content: the same weights and background written again in other
    bytes resume (and a run begun by an smf that recorded bytes still resumes against the bytes)."""
    from smf.memory.delta import checksum
    from smf.train.loop import _bytes_fingerprint

    model = copied(world, tmp_path, "retro")
    for name in ("model.safetensors", "background.safetensors"):
        _rewritten(model / name)
        assert checksum(model / name) != checksum(world["retro"] / name)
    argv = resume_args(world, tmp_path, __model=str(model))
    recorded = json.loads((tmp_path / "run_copy" / "fingerprint.json").read_text())
    assert recorded["by"] == "content"
    assert main(argv) == 0, capsys.readouterr().err

    for case, model_dir, code in (("old", world["retro"], 0), ("old_other", world["other"], 2)):
        folder = tmp_path / case
        folder.mkdir()
        argv = resume_args(world, folder, __model=str(model_dir))
        old = {**_bytes_fingerprint(world["retro"], []), "data": recorded["data"], "model_dir": recorded["model_dir"]}
        (folder / "run_copy" / "fingerprint.json").write_text(json.dumps(old))
        capsys.readouterr()
        assert main(argv) == code, capsys.readouterr().err
        if code:
            assert "other model weights" in capsys.readouterr().err


def _unreachable(kind: str) -> Exception:
    """The error a hub download raises with no network, as each library raises it."""
    import huggingface_hub.file_download as fd
    import requests
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    http = next(getattr(fd, name) for name in ("httpx2", "httpx") if hasattr(fd, name))  # huggingface_hub's HTTP client
    refused = http.ConnectError("[Errno 111] Connection refused")
    if kind == "huggingface_hub: not cached, the hub not reached":
        try:
            raise refused
        except Exception as e:
            try:
                raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub") from e
            except LocalEntryNotFoundError as chained:
                return chained
    return {"httpx: connection refused": refused,
            "requests: connection error": requests.exceptions.ConnectionError("Max retries exceeded"),
            "huggingface_hub: offline mode": OfflineModeIsEnabled("Cannot reach the hub: offline mode is enabled"),
            "a timeout": TimeoutError("timed out")}[kind]


_HUB_ERRORS = ["huggingface_hub: not cached, the hub not reached", "httpx: connection refused", "requests: connection error",
               "huggingface_hub: offline mode", "a timeout"]


@pytest.fixture
def no_network(monkeypatch):
    """Online as far as smf and transformers can tell (HF_HUB_OFFLINE unset), with no network: a socket that
    connects fails the test (nothing reaches a hub)."""
    import socket

    import huggingface_hub.constants
    import transformers.utils.hub

    def connect(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(transformers.utils.hub, "is_offline_mode", lambda: False)
    return monkeypatch


@pytest.mark.parametrize("kind", _HUB_ERRORS)
@pytest.mark.parametrize("command", ["ask", "train", "tokenizer"])
def test_a_hub_model_with_no_network_is_one_line_naming_it(command, kind, no_network, world, tmp_path, capsys):  # noqa: F811
    """A hub id, HF_HUB_OFFLINE unset, and the download fails for want of a connection: one line naming the model,
    saying the hub cannot be reached, and what to do (a local folder, HF_HUB_OFFLINE once it is cached)."""
    import transformers.utils.hub

    calls = []

    def download(repo_id, *args, **kwargs):
        calls.append(repo_id)
        raise _unreachable(kind)

    no_network.setattr(transformers.utils.hub, "hf_hub_download", download)
    no_network.setattr(transformers.utils.hub, "snapshot_download", download)
    name = "smf-h7-nobody/not-a-model"
    if command == "tokenizer":  # loaded on its own (smf learn, a study's base)
        from smf.models import load_tokenizer

        with pytest.raises(SmfError) as e:
            load_tokenizer(name)
        line = str(e.value)
    else:
        argv = (["ask", "--model", name, "hi"] if command == "ask" else
                ["train", "--model", name, "--method", "full", "--data", str(world["data"]), "--steps", "1", "--out", f"{tmp_path}/out"])
        capsys.readouterr()
        assert main(argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
    assert calls and set(calls) == {name}
    assert f"cannot load hub model '{name}': the hub cannot be reached" in line, line
    assert "give a local model folder" in line and "HF_HUB_OFFLINE=1" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", _HUB_ERRORS)
def test_a_hub_dataset_with_no_network_is_one_line_naming_it(kind, no_network):
    import datasets

    from smf.data.hub import load_rows

    def load_dataset(path, *args, **kwargs):
        raise _unreachable(kind)

    no_network.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(SmfError, match=r"cannot load smf-tests/no-such-dataset \[validation\]: the hub cannot be reached .* "
                                       r"give a local file in the same schema.*HF_DATASETS_OFFLINE=1"):
        load_rows(None, hub_path="smf-tests/no-such-dataset", hub_name=None, split="validation")
