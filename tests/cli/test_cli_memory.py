"""`smf retrofit` and `smf info` end to end, including bad input."""

import pytest

from conftest import tiny_model
from smf.cli import main


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tokenizer):
    """A tiny random Llama with the default model's tokenizer, saved as a model folder."""
    path = tmp_path_factory.mktemp("tiny") / "model"
    model = tiny_model(vocab_size=len(tokenizer))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_retrofit_then_info(tiny_folder, tmp_path, capsys):
    out = tmp_path / "retro"
    assert main(["retrofit", "--model", str(tiny_folder), "--layers", "1,3", "--slots", "64", "--heads", "2", "--topk", "4", "--key-dim", "16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max |logit change| on a probe sentence: 0" in printed
    assert (out / "smf_memory.json").is_file() and (out / "model.safetensors").is_file()
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "additive at layers 1, 3" in info
    assert "slots 64 per layer (8×8 product keys), heads 2, top-k 4" in info
    # memory = per layer: values 64×48 + keys 2·2·8·8 + q 48·32 + gate 48·48 + out 48·48
    assert f"memory {2 * (64 * 48 + 2 * 2 * 8 * 8 + 48 * 32 + 2 * 48 * 48):,}" in info


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "1,7"], "memory layer index 7 does not exist: the model has 4 layers"),
        (["--slots", "1000"], "must be a perfect square"),
        (["--model", "./no/such/folder"], "model folder ./no/such/folder does not exist"),
        (["--model", "nobody-here/no-such-model"], "the hub cannot be reached (offline: HF_HUB_OFFLINE is set) and nobody-here/no-such-model"),
    ],
)
def test_retrofit_bad_input(tiny_folder, tmp_path, capsys, args, message):
    out = tmp_path / "never"
    argv = ["retrofit", "--model", str(tiny_folder), "--slots", "64", "--topk", "4", "--out", str(out), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("smf: error: ") and message in err[0], err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")], "no half-written folder"


def test_retrofit_refuses_existing_output(tiny_folder, tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["retrofit", "--model", str(tiny_folder), "--slots", "64", "--topk", "4", "--layers", "1", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_info_on_missing_folder(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_retrofit_with_the_published_layer(tiny_folder, tmp_path, capsys):
    """--variant published: the study's layer, which changes the logits from the start (its projections have
    biases and its values are drawn); info says so; zero values for it are refused in one line."""
    out = tmp_path / "published"
    common = ["retrofit", "--model", str(tiny_folder), "--layers", "1", "--slots", "64", "--heads", "2", "--topk", "4", "--key-dim", "16"]
    assert main([*common, "--variant", "published", "--scale", "0.01", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max |logit change| on a probe sentence: 0\n" not in printed
    assert main(["info", str(out)]) == 0
    assert "additive at layers 1 (the published study's layer" in capsys.readouterr().out
    assert main([*common, "--variant", "published", "--value-init", "zeros", "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the published memory layer draws its values N(0, 1/√value_dim); remove value_init 'zeros'" in err[0]
