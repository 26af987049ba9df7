"""Compact run folders and `smf export`.

An SMF run saves only the value rows it changed, over a checksummed pointer to the folder
it started from; it loads to the trained model's exact logits, refuses a base that changed,
and exports to a standalone folder that transformers loads. LoRA runs export merged and
full runs plain.
"""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import memory_folder, tiny_model
from smf.cli import main
from smf.errors import SmfError
from smf.memory import MemoryConfig
from smf.memory.delta import folder_bytes
from smf.names import DELTA_FILE, DELTA_WEIGHTS
from smf.models import load_model, load_tokenizer, resolve_model
from smf.train import TrainConfig, train
from test_train import examples

MEM = MemoryConfig(layers=(1, 3), slots=4096, heads=2, topk=4, key_dim=16)


@pytest.fixture(scope="module")
def retro(tmp_path_factory, tokenizer):
    """A tiny retrofitted folder with background statistics."""
    return memory_folder(tmp_path_factory.mktemp("compact") / "retro", tokenizer, MEM, "alpha beta gamma delta " * 40)


def run(folder, out, tokenizer, **settings):
    folder = resolve_model(folder)  # a run folder stands for RUN/model, as in smf train
    model, _ = load_model(folder)
    config = TrainConfig.from_dict({"steps": 6, "batch_size": 4, "max_length": 48, **settings})
    return train(model, tokenizer, examples(), config, out, model_dir=folder, progress=False)


@pytest.fixture(scope="module")
def smf_run(retro, tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "smf"
    return out, run(retro, out, tokenizer, method="smf", rule="tfidf", top_t=8, lr=0.5)


def logits(model, tokenizer, text="alpha beta gamma and the rest"):
    """On the CPU (a model trained on a GPU is moved back), so logits compare bit for bit."""
    with torch.no_grad():
        return model.cpu()(**tokenizer(text, return_tensors="pt")).logits


def test_an_smf_run_stores_only_the_changed_rows(smf_run, retro, tokenizer):
    out, result = smf_run
    folder = out / "model"
    assert (folder / DELTA_FILE).is_file() and not (folder / "config.json").exists()
    base, _ = load_model(retro)
    changed = {}
    for (name, before), after in zip(base.state_dict().items(), result.model.state_dict().values()):
        rows = (before != after.cpu()).reshape(len(before), -1).any(dim=1).nonzero().flatten() if before.dim() else None
        if rows is not None and len(rows):
            changed[name] = rows
    assert changed and all(name.endswith("memory.values") for name in changed)
    from safetensors.torch import load_file

    stored = load_file(str(folder / DELTA_WEIGHTS))
    assert {k.split("::")[0] for k in stored} == set(changed)
    for name, rows in changed.items():
        assert torch.equal(stored[name + "::rows"], rows)
    assert folder_bytes(folder) < 0.10 * folder_bytes(retro)
    meta = json.loads((folder / DELTA_FILE).read_text())
    assert meta["changed"]["rows"] == sum(len(r) for r in changed.values())
    # loads (through the run folder) to the trained model's exact logits
    loaded, _ = load_model(out)
    assert torch.equal(logits(loaded, tokenizer), logits(result.model, tokenizer))
    assert not torch.equal(logits(loaded, tokenizer), logits(base, tokenizer))


def test_transformers_refuses_a_delta_folder(smf_run):
    with pytest.raises((OSError, ValueError), match="config.json"):
        AutoModelForCausalLM.from_pretrained(smf_run[0] / "model", trust_remote_code=True)


def test_a_changed_moved_or_missing_base_is_refused_clearly(smf_run, retro, tokenizer, tmp_path):
    out, result = smf_run
    # run and base moved together: the relative pointer still finds the base
    moved = tmp_path / "moved"
    shutil.copytree(retro, moved / "compact" / "retro")
    shutil.copytree(out, moved / "runs" / "smf")
    meta_file = moved / "runs" / "smf" / "model" / DELTA_FILE
    meta = json.loads(meta_file.read_text())
    meta["base"] = "../../../compact/retro"
    meta["base_absolute"] = str(tmp_path / "nowhere")
    meta_file.write_text(json.dumps(meta))
    loaded, _ = load_model(moved / "runs" / "smf")
    assert torch.equal(logits(loaded, tokenizer), logits(result.model, tokenizer))
    # a base whose weights changed since: refused, never combined
    from safetensors.torch import load_file, save_file

    weights = moved / "compact" / "retro" / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in tensors if k.endswith("memory.values"))
    tensors[name][0, 0] += 1.0
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(SmfError, match="another base than .*fingerprint .* recorded in"):
        load_model(moved / "runs" / "smf")
    shutil.rmtree(moved / "compact")
    with pytest.raises(SmfError, match="its base model is gone.*smf export"):
        load_model(moved / "runs" / "smf")


def test_export_smf_run_loads_in_transformers(smf_run, tmp_path, capsys):
    out, result = smf_run
    assert main(["export", str(out), "--out", str(tmp_path / "exported")]) == 0
    assert "max |logit difference| 0" in capsys.readouterr().out
    folder = tmp_path / "exported"
    theirs = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = load_tokenizer(folder)
    assert torch.allclose(logits(theirs, tokenizer), logits(result.model, tokenizer), atol=1e-5)
    assert (folder / "background.safetensors").is_file()  # smf learn / train can go on from it
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForCausalLM.from_pretrained(folder)
    # bad input: one line, exit 2, nothing written
    assert main(["export", str(out), "--out", str(folder)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_training_on_from_a_run_writes_against_the_first_base(smf_run, retro, tokenizer, tmp_path):
    out, first = smf_run
    second = run(out, tmp_path / "more", tokenizer, method="smf", rule="tfidf", top_t=8, lr=0.5, seed=1)
    meta = json.loads((tmp_path / "more" / "model" / DELTA_FILE).read_text())
    assert meta["base_absolute"] == str(retro.resolve())
    loaded, _ = load_model(tmp_path / "more")
    assert torch.equal(logits(loaded, tokenizer), logits(second.model, tokenizer))
    # the second run's rows include the first run's changes (it started from them)
    first_rows = {k for k in first.model.state_dict() if k.endswith("memory.values")}
    assert meta["changed"]["rows"] >= json.loads((out / "model" / DELTA_FILE).read_text())["changed"]["rows"] > 0 and first_rows


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_export_lora_merged_and_full_plain(method, tokenizer, tmp_path):
    plain = tmp_path / "plain"
    model = tiny_model(vocab_size=len(tokenizer))
    model.save_pretrained(plain)
    tokenizer.save_pretrained(plain)
    result = run(plain, tmp_path / "run", tokenizer, method=method, lr=1e-2)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "exported")]) == 0
    config = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert config["model_type"] == "llama" and not (tmp_path / "exported" / "adapter_config.json").exists()
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()
    assert torch.allclose(logits(theirs, tokenizer), logits(result.model, tokenizer), atol=1e-5)
    assert not torch.allclose(logits(theirs, tokenizer), logits(model.eval(), tokenizer), atol=1e-4)


def test_a_damaged_delta_is_one_clear_error(smf_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(smf_run[0], copy)
    weights = copy / "model" / DELTA_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(SmfError, match="cannot read .*delta.safetensors.*the run folder is damaged"):
        load_model(copy)


def _point(run_model, base):
    """Re-point a compact run at `base` (both paths), as if its base had been re-made there."""
    meta_file = run_model / DELTA_FILE
    meta = json.loads(meta_file.read_text())
    meta["base"], meta["base_absolute"] = str(base), str(base)
    meta_file.write_text(json.dumps(meta))


def test_a_base_is_checked_by_content_not_bytes_nor_key_order(smf_run, tokenizer, tmp_path):
    out, result = smf_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    # the same base made again elsewhere, its smf_memory.json keys in another order: accepted
    same = memory_folder(tmp_path / "same", tokenizer, MEM, "alpha beta gamma delta " * 40)
    memory_file = same / "smf_memory.json"
    memory_file.write_text(json.dumps(dict(reversed(list(json.loads(memory_file.read_text()).items()))), indent=3))
    _point(copy / "model", same)
    loaded, _ = load_model(copy)
    assert torch.equal(logits(loaded, tokenizer), logits(result.model, tokenizer))
    # the same weights under other memory settings (top-k: other logits): refused, naming both
    for change in ({"topk": 2}, {"seed": 1}):
        other = memory_folder(tmp_path / f"other_{next(iter(change))}", tokenizer, MemoryConfig(**{**MEM.to_dict(), **change}))
        _point(copy / "model", other)
        with pytest.raises(SmfError, match=f"another base than {other}.*fingerprint .* here, .* recorded in .*{DELTA_FILE}"):
            load_model(copy)


@pytest.mark.slow
def test_a_lora_run_finds_its_base_from_anywhere_and_refuses_another(tokenizer, tmp_path, monkeypatch):
    work = tmp_path / "work"
    plain = work / "plain"
    tiny_model(vocab_size=len(tokenizer)).save_pretrained(plain)
    tokenizer.save_pretrained(plain)
    monkeypatch.chdir(work)  # trained with relative paths, as a user in that folder would
    result = run("./plain", "run", tokenizer, method="lora", lr=1e-2)
    record = json.loads((work / "run" / "model" / "smf_base.json").read_text())
    assert record["base"] == "../../plain" and record["base_absolute"] == str(plain.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded, _ = load_model(work / "run")
    assert torch.allclose(logits(loaded, tokenizer), logits(result.model, tokenizer), atol=1e-6)
    # run and base moved together: found relative to the run
    shutil.move(str(work), str(tmp_path / "moved"))
    loaded, _ = load_model(tmp_path / "moved" / "run")
    assert torch.allclose(logits(loaded, tokenizer), logits(result.model, tokenizer), atol=1e-6)
    # another model saved over the base: refused, never merged onto it
    tiny_model(vocab_size=len(tokenizer), seed=1).save_pretrained(tmp_path / "moved" / "plain")
    with pytest.raises(SmfError, match="another base than .*plain.*fingerprint .* recorded in .*smf_base.json"):
        load_model(tmp_path / "moved" / "run")


def test_export_carries_what_later_commands_read_and_names_what_it_leaves(retro, tmp_path, capsys):
    source = tmp_path / "learned"
    shutil.copytree(retro, source)
    from safetensors.torch import save_file

    save_file({"rows.1": torch.tensor([3, 5])}, str(source / "protected_rows.safetensors"))
    (source / "kept_answers.jsonl").write_text('{"prompt": "Q", "target": " A"}\n')
    (source / "learn_run").mkdir()
    (source / "learn_run" / "log.jsonl").write_text("{}\n")
    assert main(["export", str(source), "--out", str(tmp_path / "exported")]) == 0
    for name in ("background.safetensors", "protected_rows.safetensors", "kept_answers.jsonl"):
        assert (tmp_path / "exported" / name).read_bytes() == (source / name).read_bytes()
    assert f"left behind in {source} (not part of the model): learn_run" in capsys.readouterr().out


def test_a_stale_base_where_the_relative_path_points_does_not_hide_the_right_one(smf_run, retro, tokenizer, tmp_path):
    out, result = smf_run
    copy = tmp_path / "runs" / "smf"
    shutil.copytree(out, copy)
    memory_folder(tmp_path / "stale", tokenizer, MemoryConfig(**{**MEM.to_dict(), "seed": 1}))
    meta_file = copy / "model" / DELTA_FILE
    meta = json.loads(meta_file.read_text())
    meta["base"] = "../../../stale"  # base_absolute still names the fixture's retro folder
    meta_file.write_text(json.dumps(meta))
    loaded, _ = load_model(copy)
    assert torch.equal(logits(loaded, tokenizer), logits(result.model, tokenizer))


def test_the_fingerprint_reads_weights_by_name_not_the_file_layout(retro, tmp_path):
    from safetensors.torch import load_file, save_file

    from smf.memory.delta import checksum, fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(retro, copy)
    tensors = load_file(str(copy / "model.safetensors"))
    # the same tensors written again in reverse order with other header metadata: other bytes, same model
    save_file(dict(reversed(list(tensors.items()))), str(copy / "model.safetensors"), metadata={"format": "pt", "note": "re-made"})
    assert checksum(copy / "model.safetensors") != checksum(retro / "model.safetensors")
    assert fingerprint(copy) == fingerprint(retro)
    name = sorted(tensors)[-1]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[-1] += 1e-3
    save_file(tensors, str(copy / "model.safetensors"), metadata={"format": "pt"})
    assert fingerprint(copy) != fingerprint(retro)
