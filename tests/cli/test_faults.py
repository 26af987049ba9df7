"""Every bad input and fault a user can cause ends in one line, exit 2, and the output path
as it was: a table of cases, each run through the real CLI (`smf.cli.main`)."""

import shutil
from pathlib import Path

import pytest

from conftest import tiny_model
from smf.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    """Model folders and runs the cases start from (never changed by a case)."""
    from smf.memory import MemoryConfig, retrofit, save_retrofitted

    root = tmp_path_factory.mktemp("world")
    plain = root / "plain"
    tiny_model(vocab_size=len(tokenizer)).save_pretrained(plain)
    tokenizer.save_pretrained(plain)
    mem = MemoryConfig(layers=(1, 3), slots=256, heads=2, topk=4, key_dim=16)
    retro = save_retrofitted(retrofit(tiny_model(vocab_size=len(tokenizer)), mem), tokenizer, root / "retro")
    other = save_retrofitted(retrofit(tiny_model(vocab_size=len(tokenizer)), MemoryConfig(**{**mem.to_dict(), "seed": 1})), tokenizer, root / "retro_seed1")
    small = ["--batches", "2", "--batch-size", "2", "--max-length", "32"]
    for folder in (retro, other):
        assert main(["background", "--model", str(folder), *small]) == 0
    data = root / "facts.txt"
    data.write_text("The Zorvex lighthouse was built by Mira Tanaka.\nKelbrin is the capital of Oshu.\n" * 4)
    other_data = root / "other.txt"
    other_data.write_text("Tomatoes were first grown in the Andes.\nThe river Sel flows north.\n" * 4)
    run = root / "run"  # an unfinished run with a checkpoint at step 2
    argv = ["train", "--model", str(retro), "--method", "smf", "--rule", "kl", "--top-t", "8", "--data", str(data),
            "--steps", "2", "--batch-size", "2", "--max-length", "32", "--checkpoint-every", "1", "--out", str(run)]
    assert main(argv) == 0
    (run / "summary.json").unlink()  # as if killed after its last checkpoint
    shutil.rmtree(run / "model")
    tasks = root / "tasks.yaml"
    tasks.write_text("tasks:\n  - {name: capitals, limit: 2}\n")
    return {"root": root, "plain": plain, "retro": retro, "other": other, "data": data, "other_data": other_data,
            "run": run, "train": argv, "tasks": tasks}


def damaged(world, tmp_path, folder: str, file: str, how: str = "truncate") -> Path:
    """A copy of a world folder with one file truncated or overwritten with junk."""
    copy = tmp_path / f"{folder}_damaged"
    shutil.copytree(world[folder], copy)
    target = copy / file
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2] if how == "truncate" else b"\x00junk{")
    return copy


def study(tmp_path, text: str) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return str(path)


def resume_args(world, tmp_path, truncate: str | None = None, **change) -> list[str]:
    """The unfinished run, copied (one of its files truncated), resumed with one thing changed."""
    copy = tmp_path / "run_copy"
    shutil.copytree(world["run"], copy)
    if truncate:
        _truncate(copy / truncate)
    argv = list(world["train"])
    argv[argv.index("--out") + 1] = str(copy)
    for flag, value in change.items():
        argv[argv.index(flag.replace("_", "-")) + 1] = value
    return [*argv, "--resume"]


CASES = {
    # damaged files
    "info, truncated weights": (lambda w, t: ["info", str(damaged(w, t, "retro", "model.safetensors"))], "model.safetensors"),
    "eval, truncated weights": (lambda w, t: ["eval", "--model", str(damaged(w, t, "retro", "model.safetensors")), "--tasks-file", str(w["tasks"]), "--out", f"{t}/out.json"], "model.safetensors"),
    "eval, truncated plain weights": (lambda w, t: ["eval", "--model", str(damaged(w, t, "plain", "model.safetensors")), "--tasks-file", str(w["tasks"]), "--out", f"{t}/out.json"], "cannot load the model"),
    "train, truncated weights": (lambda w, t: ["train", "--model", str(damaged(w, t, "retro", "model.safetensors")), "--method", "smf", "--data", str(w["data"]), "--steps", "1", "--out", f"{t}/out"], "model.safetensors"),
    "background, truncated weights": (lambda w, t: ["background", "--model", str(damaged(w, t, "retro", "model.safetensors")), "--batches", "1"], "model.safetensors"),
    "retrofit, truncated weights": (lambda w, t: ["retrofit", "--model", str(damaged(w, t, "plain", "model.safetensors")), "--layers", "1", "--slots", "256", "--out", f"{t}/out"], "cannot load the model"),
    "train, truncated background": (lambda w, t: ["train", "--model", str(damaged(w, t, "retro", "background.safetensors")), "--method", "smf", "--data", str(w["data"]), "--steps", "1", "--out", f"{t}/out"], "background.safetensors"),
    "info, corrupt smf_memory.json": (lambda w, t: ["info", str(damaged(w, t, "retro", "smf_memory.json", "junk"))], "smf_memory.json"),
    "eval, corrupt smf_memory.json": (lambda w, t: ["eval", "--model", str(damaged(w, t, "retro", "smf_memory.json", "junk")), "--tasks-file", str(w["tasks"]), "--out", f"{t}/out.json"], "smf_memory.json"),
    "resume, truncated checkpoint weights": (lambda w, t: resume_args(w, t, truncate="checkpoint/trainable.safetensors"), "trainable.safetensors"),
    "resume, truncated optimizer state": (lambda w, t: resume_args(w, t, truncate="checkpoint/state.safetensors"), "state.safetensors"),
    # data
    "background, non-UTF-8 text": (lambda w, t: ["background", "--model", str(w["retro"]), "--data", str(_latin1(t, "bg.txt"))], "not UTF-8"),
    "train, non-UTF-8 JSONL": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(_latin1(t, "d.jsonl")), "--steps", "1", "--out", f"{t}/out"], "not UTF-8"),
    "train, a JSONL row that is not an object": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(_write(t, "d.jsonl", "[1, 2]\n")), "--steps", "1", "--out", f"{t}/out"], "not an object"),
    "train, empty data file": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(_write(t, "d.txt", "")), "--steps", "1", "--out", f"{t}/out"], "d.txt"),
    "learn, empty facts file": (lambda w, t: ["learn", "--data", str(_write(t, "f.txt", "\n")), "--model", str(w["plain"]), "--out", f"{t}/out"], "f.txt"),
    "learn, a row without its answer": (lambda w, t: ["learn", "--data", str(_write(t, "f.jsonl", '{"question": "Who?"}\n')), "--model", str(w["plain"]), "--out", f"{t}/out"], "answer"),
    # outputs
    "train --out is a file": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(w["data"]), "--steps", "1", "--out", str(_write(t, "out", "x"))], "is a file"),
    "train --out inside a file": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(w["data"]), "--steps", "1", "--out", str(_write(t, "f", "x") / "run")], "f"),
    "train --out holds something else": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "full", "--data", str(w["data"]), "--steps", "1", "--out", str(_write(t, "out/notes.txt", "x").parent)], "not a training run folder"),
    "eval --out is a folder": (lambda w, t: ["eval", "--model", str(w["plain"]), "--tasks-file", str(w["tasks"]), "--out", str(_mkdir(t, "out"))], "is a folder"),
    "eval --out inside a file": (lambda w, t: ["eval", "--model", str(w["plain"]), "--tasks-file", str(w["tasks"]), "--out", str(_write(t, "f", "x") / "r.json")], "f"),
    "retrofit --out inside a file": (lambda w, t: ["retrofit", "--model", str(w["plain"]), "--layers", "1", "--slots", "256", "--out", str(_write(t, "f", "x") / "m")], "f"),
    "export --out exists": (lambda w, t: ["export", str(w["retro"]), "--out", str(_mkdir(t, "out"))], "already exists"),
    # wrong method or model
    "smf on a model without memory": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "smf", "--data", str(w["data"]), "--steps", "1", "--out", f"{t}/out"], "needs a model with memory layers"),
    "--top-t with --method lora": (lambda w, t: ["train", "--model", str(w["plain"]), "--method", "lora", "--top-t", "5", "--data", str(w["data"]), "--steps", "1", "--out", f"{t}/out"], "'top_t' is an option of smf"),
    "a folder that is not a model": (lambda w, t: ["ask", "--model", str(_mkdir(t, "empty")), "hi"], "not a model folder"),
    "ask without a question": (lambda w, t: ["ask", "--model", str(w["plain"])], "no question"),
    # resume must not mix runs
    "resume onto another retrofit": (lambda w, t: resume_args(w, t, __model=str(w["other"])), "model"),
    "resume with other data": (lambda w, t: resume_args(w, t, __data=str(w["other_data"])), "data"),
    "resume with another background": (lambda w, t: resume_args(w, t, __model=str(_rebackground(w, t))), "background"),
    # study configs
    "study, empty config": (lambda w, t: ["compare", "--config", study(t, ""), "--out", f"{t}/out"], "empty"),
    "study, no methods": (lambda w, t: ["compare", "--config", study(t, "name: x\n"), "--out", f"{t}/out"], "no 'methods'"),
    "study, steps: three": (lambda w, t: ["compare", "--config", study(t, "methods: {lora: {}}\ntrain: {steps: three}\n"), "--out", f"{t}/out"], "steps: expected an integer"),
    "study, top_t: '300'": (lambda w, t: ["compare", "--config", study(t, "methods: {smf-kl: {top_t: '300'}}\n"), "--out", f"{t}/out"], "top_t: expected an integer"),
    "study, no task": (lambda w, t: ["compare", "--config", study(t, "methods: {lora: {}}\n"), "--out", f"{t}/out"], "names no task"),
    "study, lr: fast": (lambda w, t: ["compare", "--config", study(t, "methods: {lora: {lr: fast}}\n"), "--out", f"{t}/out"], "lr: expected a number"),
    "eval, unknown format": (lambda w, t: ["eval", "--model", str(w["plain"]), "--tasks-file", str(_write(t, "t.yaml", "tasks: [{name: medmcqa, format: nope}]\n")), "--out", f"{t}/out.json"], "format must be one of"),
}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _mkdir(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    return tmp / name


def _latin1(tmp: Path, name: str) -> Path:
    path = tmp / name
    text = "Café crème brûlée is a dessert." if name.endswith(".txt") else '{"text": "Café crème brûlée is a dessert."}'
    path.write_bytes((text + "\n").encode("latin-1") * 20)
    return path


def _rebackground(world, tmp: Path) -> Path:
    """The run's retrofit with background statistics counted on other text."""
    copy = tmp / "retro_rebackground"
    shutil.copytree(world["retro"], copy)
    assert main(["background", "--model", str(copy), "--data", str(world["other_data"]), "--batches", "1", "--batch-size", "1", "--max-length", "8"]) == 0
    return copy


def snapshot(tmp: Path) -> dict:
    return {str(p.relative_to(tmp)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(tmp.rglob("*"))}


@pytest.mark.parametrize("name", list(CASES))
def test_fault_is_one_line_and_leaves_nothing(name, world, tmp_path, capsys):
    make, message = CASES[name]
    argv = make(world, tmp_path)
    before = snapshot(tmp_path)
    world_before = snapshot(world["root"])
    capsys.readouterr()
    assert main(argv) == 2, name
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("smf: error: "), err
    assert message in err[0], err[0]
    assert snapshot(tmp_path) == before, "the command changed its output path"
    assert snapshot(world["root"]) == world_before


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_and_its_checkpoint_resumes(tmp_path, tokenizer):
    """Inject a NaN into the weights after step 3: step 4's loss is NaN, the run stops with one
    line naming the step, nothing of step 4 is applied, and the step-2 checkpoint resumes to
    the same weights as a run that never broke."""
    import torch

    from smf.errors import SmfError
    from smf.train import TrainConfig, train
    from test_train import examples

    config = TrainConfig.from_dict({"method": "full", "lr": 1e-3, "steps": 6, "batch_size": 4, "max_length": 48, "checkpoint_every": 2})
    whole = train(tiny_model(vocab_size=len(tokenizer)), tokenizer, examples(), config, tmp_path / "whole", progress=False, save_model=False)

    def poison(model, step):
        if step == 3:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return {}

    with pytest.raises(SmfError, match=r"step 4: the training loss is nan .*checkpoint at step 2 is kept: continue with --resume"):
        train(tiny_model(vocab_size=len(tokenizer)), tokenizer, examples(), config, tmp_path / "broken", eval_fn=poison, eval_every=1,
              progress=False, save_model=False)
    assert not (tmp_path / "broken" / "summary.json").exists()
    resumed = train(tiny_model(vocab_size=len(tokenizer)), tokenizer, examples(), config, tmp_path / "broken", resume=True,
                    progress=False, save_model=False)
    assert resumed.summary["resumed_from_step"] == 2
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_files_smf_writes_have_the_usual_modes(tmp_path):
    import os
    import stat

    from smf.io import atomic_dir, write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "r.json", {"a": 1})
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755


def test_info_does_not_count_background_statistics_as_parameters(world, capsys):
    from smf.cli.memory import parameter_counts

    counts = parameter_counts(world["retro"])
    assert (world["retro"] / "background.safetensors").is_file()
    from smf.memory import load_retrofitted

    model = load_retrofitted(world["retro"])
    assert counts["base"] + counts["memory"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("error, message", [
    (PermissionError(13, "Permission denied", "/data/out"), "cannot write or read /data/out: permission denied"),
    (OSError(28, "No space left on device", "/data/out/x"), "the disk is full while writing /data/out/x"),
    (IsADirectoryError(21, "Is a directory", "/data/r.json"), "/data/r.json is a folder"),
    (NotADirectoryError(20, "Not a directory", "/data/f/x"), "part of this path is a file"),
])
def test_an_unforeseen_os_error_is_one_line(error, message, monkeypatch, capsys, tmp_path):
    """Read-only folders cannot be tested as root (root writes anyway): the CLI's last line of
    defence turns any OSError into one line naming the path, checked here by raising it."""
    import smf.cli.memory as commands

    def boom(args):
        raise error

    monkeypatch.setattr(commands, "run_info", boom)
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"smf: error: {err[0][len('smf: error: '):]}"] and message in err[0]
