"""Outputs and the one error path: a lock per output, a cut-short log line, a full disk, input that is not text,
a missing GPU, and `smf --debug` for the traceback."""

import errno
import io
import json
import os
import subprocess
import sys

import pytest

from conftest import tiny_model
from smf.cli import main
from smf.errors import SmfError
from smf.lock import lock_path, output_lock
from smf.train import TrainConfig, train
from test_train import examples

CONFIG = {"method": "full", "steps": 2, "batch_size": 2, "max_length": 32, "checkpoint_every": 1}


def test_a_log_line_cut_short_does_not_block_resume(tokenizer, tmp_path, capsys):
    out = tmp_path / "run"
    config = TrainConfig.from_dict(CONFIG)
    train(tiny_model(vocab_size=len(tokenizer)), tokenizer, examples(8), config, out, progress=False, save_model=False)
    (out / "summary.json").unlink()  # killed after its last checkpoint, mid-way through writing a log record
    with (out / "log.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": 1.2')
    capsys.readouterr()
    resumed = train(tiny_model(vocab_size=len(tokenizer)), tokenizer, examples(8), config, out, resume=True, progress=False,
                    save_model=False)
    assert resumed.summary["resumed_from_step"] == 1  # the last checkpoint; step 2 runs again
    assert "its last line was cut short" in capsys.readouterr().err
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]


def test_a_full_disk_during_a_checkpoint_is_one_line(tokenizer, tmp_path, capsys, monkeypatch):
    import smf.train.loop as loop

    data = tmp_path / "d.txt"
    data.write_text("Kelbrin is the capital of Oshu.\n" * 4)
    model = tmp_path / "plain"
    tiny_model(vocab_size=len(tokenizer)).save_pretrained(model)
    tokenizer.save_pretrained(model)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "checkpoint"))

    monkeypatch.setattr(loop, "_save_checkpoint", full)
    capsys.readouterr()
    code = main(["train", "--model", str(model), "--method", "full", "--data", str(data), "--steps", "2", "--batch-size", "2",
                 "--max-length", "16", "--checkpoint-every", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("smf: error:") == 1 and "smf: error: the disk is full" in err
    assert not (tmp_path / ".run.lock").exists()


def test_binary_chat_input_is_one_line(tmp_path, tokenizer, capsys, monkeypatch):
    model = tmp_path / "plain"
    tiny_model(vocab_size=len(tokenizer)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe\x00binary\n"), encoding="utf-8"))
    assert main(["chat", "--model", str(model)]) == 2
    assert capsys.readouterr().err.strip() == "smf: error: the input is not UTF-8 text (byte 0 of a line); type or pipe UTF-8 text"


def test_a_missing_gpu_is_one_line(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("SMF_DEVICE", "cuda")
    assert main(["ask", "--model", "default", "hi"]) == 2
    assert "SMF_DEVICE='cuda' but this machine has 0 usable GPUs" in capsys.readouterr().err


def test_debug_shows_the_traceback(monkeypatch, capsys):
    monkeypatch.setenv("SMF_DEVICE", "nonsense")
    assert main(["ask", "--model", "default", "hi"]) == 2
    with pytest.raises(SmfError, match="not a device"):
        main(["--debug", "ask", "--model", "default", "hi"])


def test_an_unforeseen_error_is_one_line_naming_debug(monkeypatch, capsys):
    import smf.cli.use as use

    def broken(args):
        raise ValueError("a bug\nwith two lines")

    monkeypatch.setattr(use, "_load", broken)
    assert main(["ask", "--model", "default", "hi"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("smf: error: ValueError: a bug with two lines") and "smf --debug" in line


def test_the_lock_refuses_a_second_holder_and_goes_away(tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        assert lock_path(out).read_text().strip() == str(os.getpid())
        with pytest.raises(SmfError, match=f"in use by process {os.getpid()}"):
            with output_lock(out):
                pass
    assert not lock_path(out).exists()
    with pytest.raises(RuntimeError):
        with output_lock(out):
            raise RuntimeError("the command failed")
    assert not lock_path(out).exists()  # removed on a failure too


def test_a_stale_lock_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs
    out = tmp_path / "out"
    lock_path(out).write_text(f"{dead.pid}\n")
    with output_lock(out):
        assert lock_path(out).read_text().strip() == str(os.getpid())
    assert not lock_path(out).exists()


def test_eval_may_replace_its_own_results_only(tmp_path):
    from smf.cli.evaluate import _is_eval_result

    ours, theirs = tmp_path / "r.json", tmp_path / "notes.json"
    ours.write_text(json.dumps({"model": "default", "tasks": {"facts": {}}}))
    theirs.write_text(json.dumps({"model": "mine"}))
    assert _is_eval_result(ours) and not _is_eval_result(theirs)
