"""The public API (`import smf`, src/smf/api.py, docs/api.md): cheap to import, every name typed and documented,
bad input refused in one line naming the fix, and the README's Python example runs as written."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import smf

from conftest import tiny_model

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(layers=(1, 2), slots=256, heads=2, topk=4, key_dim=16)


def test_import_smf_is_cheap():
    """`import smf` loads neither torch nor transformers (the API's names load on first use), yet serves them all."""
    code = ("import sys, smf; heavy = [m for m in ('torch', 'transformers', 'smf.api') if m in sys.modules]; "
            "print(heavy); smf.add_memory; print('smf.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "True"], out


def test_every_public_name_is_listed_typed_and_documented():
    documented = (ROOT / "docs" / "api.md").read_text()
    assert sorted(smf.__all__) == sorted(set(smf.__all__)) and "SmfOptimizer" in smf.__all__
    for name in smf.__all__:
        value = getattr(smf, name)
        assert name in dir(smf) and not inspect.ismodule(value), name
        assert f"`{name}" in documented or f"smf.{name}" in documented, f"{name} is not in docs/api.md"
        if callable(value) and name != "SmfError":
            assert inspect.getdoc(value), f"smf.{name} has no docstring"
            if inspect.isfunction(value):
                signature = inspect.signature(value)
                assert signature.return_annotation is not inspect.Signature.empty, name
                assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values()
                           if p.name not in ("tokenizer",)), f"smf.{name} has an untyped parameter"
    with pytest.raises(AttributeError, match="no attribute 'train_loop'"):
        smf.train_loop  # noqa: B018 - the rest is private


def test_no_public_name_is_shadowed_by_a_submodule():
    """Importing every smf module first (each import of a subpackage sets it as an attribute of `smf`) leaves every
    public name the API's object, never a module."""
    code = ("import pkgutil, importlib, smf, smf.api\n"
            "for m in pkgutil.walk_packages(smf.__path__, 'smf.'):\n"
            "    if m.name not in ('smf.__main__',): importlib.import_module(m.name)\n"
            "print([n for n in smf.__all__ if n not in ('SmfError', '__version__') and getattr(smf, n) is not getattr(smf.api, n)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip().splitlines()
    assert out[-1] == "[]", out


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_bad_input_is_one_smf_error_naming_the_fix(tokenizer):
    plain = tiny_model(vocab_size=len(tokenizer))
    with pytest.raises(smf.SmfError) as e:
        smf.SmfOptimizer(plain)
    assert "no memory layers" in one_line(e) and "smf.add_memory(model, smf.MemoryConfig())" in one_line(e)
    with pytest.raises(smf.SmfError, match="add them first: smf.add_memory"):
        smf.background_statistics(plain, tokenizer, ["alpha beta"] * 10, batches=None, max_length=8)
    with pytest.raises(smf.SmfError, match="config must be smf.MemoryConfig"):
        smf.add_memory(plain, {"slots": 256})

    model = smf.add_memory(tiny_model(vocab_size=len(tokenizer)), smf.MemoryConfig(**SMALL))
    other = smf.add_memory(tiny_model(vocab_size=len(tokenizer)), smf.MemoryConfig(**{**SMALL, "layers": (1, 3)}))
    text = ["alpha beta gamma delta epsilon " * 40]
    theirs = smf.background_statistics(other, tokenizer, text, batches=None, max_length=32)
    with pytest.raises(smf.SmfError) as e:
        smf.SmfOptimizer(model, theirs)
    assert re.search(r"counted on another memory \(layer 1: 256 rows, layer 3: 256 rows\) than this model's \(layer 1: 256 rows, "
                     r"layer 2: 256 rows\); count them on this model: smf.background_statistics\(model, tokenizer\)", one_line(e))
    bigger = smf.add_memory(tiny_model(vocab_size=len(tokenizer)), smf.MemoryConfig(**{**SMALL, "slots": 1024}))
    with pytest.raises(smf.SmfError, match="another memory"):
        smf.SmfOptimizer(bigger, smf.background_statistics(model, tokenizer, text, batches=None, max_length=32))
    with pytest.raises(smf.SmfError) as e:
        smf.SmfOptimizer(model)
    assert "count them first: stats = smf.background_statistics(model, tokenizer)" in one_line(e)
    ours = smf.background_statistics(model, tokenizer, text, batches=None, max_length=32)
    rows = smf.background_statistics(model, tokenizer, [{"text": t} for t in text], batches=None, max_length=32)  # a dataset's rows
    assert rows.batches == ours.batches > 1 and all(torch.equal(rows.df[i], ours.df[i]) for i in ours.df)
    with pytest.raises(smf.SmfError, match="texts holds no text"):
        smf.background_statistics(model, tokenizer, [{"content": "alpha"}], batches=None)
    with pytest.raises(smf.SmfError, match="optimizer must be one of adam, sgd, rowwise_adagrad"):
        smf.SmfOptimizer(model, ours, optimizer="adamw_masked")
    with pytest.raises(smf.SmfError, match="top_t must be a positive number"):
        smf.SmfOptimizer(model, ours, top_t=0)
    with pytest.raises(smf.SmfError, match="batches must be >= 1"):
        smf.background_statistics(model, tokenizer, text, batches=0, max_length=32)
    with pytest.raises(smf.SmfError, match=r"give more text or fewer batches"):
        smf.background_statistics(model, tokenizer, text, batches=100, max_length=32)
    optimizer = smf.SmfOptimizer(model, ours, count="target")
    with pytest.raises(smf.SmfError, match="no training forward pass since the last step"):
        optimizer.step()
    model.train()
    with pytest.raises(smf.SmfError, match="pass labels to the model's forward call"):
        model(input_ids=torch.tensor([[5, 6, 7]]))


def test_add_memory_leaves_the_model_unchanged_and_saves_a_loadable_folder(tokenizer, tmp_path):
    """Additive memory with zero values: the same logits; model.save_pretrained writes a folder smf.load reads back."""
    model = tiny_model(vocab_size=len(tokenizer))
    ids = tokenizer("alpha beta gamma", return_tensors="pt")
    with torch.no_grad():
        before = model(**ids).logits
        smf.add_memory(model, smf.MemoryConfig(**SMALL))
        assert torch.equal(model(**ids).logits, before)
        model.save_pretrained(tmp_path / "saved")
        tokenizer.save_pretrained(tmp_path / "saved")
        again, _ = smf.load(tmp_path / "saved")
        assert list(smf.api.memory_layers(again)) == [1, 2] and torch.equal(again(**ids).logits, before)


def readme_example() -> str:
    """The README's one Python block."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "the README has one Python example"
    return blocks[0]


@pytest.mark.slow
def test_readme_python_example_runs(tiny_folder, tmp_path, monkeypatch, capsys):
    """The README's example as written, on a tiny model (its `smf.load()` given the tiny folder) and with 64 batches of
    background text in place of 512 (the same call, an eighth of the time): it retrofits, counts the background,
    trains 20 Trainer steps with SmfOptimizer, saves a folder smf.load reads and prints an answer."""
    code = readme_example()
    assert len(code.strip().splitlines()) <= 20
    for old, new in (("smf.load()", f"smf.load({str(tiny_folder)!r})"),
                     ("smf.background_statistics(model, tokenizer)", "smf.background_statistics(model, tokenizer, batches=64)")):
        assert code.count(old) == 1, old
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the project's own README
    trainer, model = scope["trainer"], scope["model"]
    assert trainer.state.global_step == 20
    optimizer = trainer.optimizer.optimizer  # accelerate's wrapper around ours
    assert isinstance(optimizer, smf.SmfOptimizer) and all(len(rows) for rows in optimizer.rows_trained.values())
    saved, _ = smf.load(tmp_path / "my_model")
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), model.state_dict().values()))
    assert capsys.readouterr().out.strip()


def test_only_training_passes_choose_rows(tokenizer):
    """SmfOptimizer counts the reads of forward passes in train mode with gradients on: an evaluation pass (eval mode,
    or no gradients) between steps chooses nothing, and a step with only such passes is refused."""
    model = smf.add_memory(tiny_model(vocab_size=len(tokenizer)), smf.MemoryConfig(**SMALL))
    stats = smf.background_statistics(model, tokenizer, ["alpha beta gamma delta epsilon " * 40], batches=None, max_length=32)
    optimizer = smf.SmfOptimizer(model, stats, top_t=4)
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "labels": torch.tensor([[5, 6, 7, 8]])}
    model.train()
    with torch.no_grad():
        model(**batch)
    model.eval()
    model(**batch)
    with pytest.raises(smf.SmfError, match="no training forward pass since the last step"):
        optimizer.step()
    model.train()
    model(**batch).loss.backward()
    optimizer.step()
    assert optimizer.last_stats["rows_selected"] == 2 * 4


def test_export_evaluate_and_learn_reach_the_commands_code(tokenizer, tmp_path):
    """smf.export writes a folder smf.load reads with the same logits; smf.evaluate scores a named task; smf.learn
    checks its settings as `smf learn` does (one SmfError naming the setting) before any model work."""
    from conftest import memory_folder

    folder = memory_folder(tmp_path / "memory", tokenizer, smf.MemoryConfig(**SMALL))
    result = smf.export(folder, tmp_path / "exported")
    assert result["memory"] and result["max_logit_gap"] <= 1e-5 and "background.safetensors" in result["carried"]
    model, _ = smf.load(tmp_path / "exported")
    ids = tokenizer("alpha beta", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, smf.load(folder)[0](**ids).logits)
    with pytest.raises(smf.SmfError, match="already exists"):
        smf.export(folder, tmp_path / "exported")
    scores = smf.evaluate_tasks(model, tokenizer, ["capitals"], limit=3)
    assert len(scores["tasks"]["capitals"]["records"]) == 3
    notes = tmp_path / "notes.txt"
    notes.write_text("The lab printer's password is bluefinch.\n")
    with pytest.raises(smf.SmfError, match="top_tt"):
        smf.learn(notes, tmp_path / "learned", model=folder, settings={"top_tt": 10})
    assert not (tmp_path / "learned").exists()
