"""Adding a method is one class and one registry line: a toy method, defined here and
registered here, runs through `smf train` and through a study without touching smf."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from smf.config import read_config
from smf.cli import main
from smf.config import Config, setting
from smf.methods import METHODS, Method, TrainConfig, families, register_method
from smf.methods.base import option_owners

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class NormOnlyOptions(Config):
    last_layers: int = setting(0, "also train the norms of the last N decoder layers")


class NormOnlyMethod(Method):
    """Train only the final norm (and optionally the last layers' norms), AdamW."""

    name = "norm-only"
    about = "the final RMSNorm only"
    Options = NormOnlyOptions
    default_lr = 1e-2
    color = "#7f7f7f"

    def prepare(self, model, model_dir):
        model.requires_grad_(False)
        model.model.norm.requires_grad_(True)
        layers = model.model.layers
        for layer in layers[len(layers) - self.options.last_layers:] if self.options.last_layers else []:
            layer.input_layernorm.requires_grad_(True)
        return model


@pytest.fixture
def toy_registered():
    register_method(NormOnlyMethod)
    yield
    METHODS.pop("norm-only")


def test_the_registry_drives_config_families_and_flags(toy_registered, capsys):
    assert "norm-only" in families() and families()["norm-only"].compared_as == "baseline"
    assert option_owners()["last_layers"] == ["norm-only"]
    config = TrainConfig.from_dict({"method": "norm-only", "last_layers": 2})
    assert config.options == NormOnlyOptions(last_layers=2) and config.to_dict()["last_layers"] == 2
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "[norm-only] also train the norms of the last N decoder layers" in " ".join(capsys.readouterr().out.split())


def test_toy_method_through_smf_train(toy_registered, tiny_folder, tmp_path):
    from smf.models import load_model

    out = tmp_path / "run"
    argv = ["train", "--model", str(tiny_folder), "--method", "norm-only", "--last-layers", "1", "--data", "facts:n_facts=20,n_control=8",
            "--steps", "2", "--batch-size", "4", "--max-length", "48", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "train_config.json").read_text())["last_layers"] == 1
    before, _ = load_model(tiny_folder)
    after, _ = load_model(out / "model")
    old, new = dict(before.named_parameters()), dict(after.named_parameters())
    changed = sorted(n for n in old if not torch.equal(old[n], new[n]))
    assert changed == ["model.layers.23.input_layernorm.weight", "model.norm.weight"]


@pytest.mark.slow
def test_toy_method_through_a_study(toy_registered, tiny_folder, tmp_path):
    from test_study import shrink

    raw = shrink(read_config(ROOT / "configs" / "offline.yaml"), tiny_folder)
    raw["methods"] = {"norm-only": {"lr": [1e-2, 1e-1]}, "full": {"lr": 1e-4}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["compare", "--config", str(path), "--out", str(tmp_path / "s")]) == 0
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert [r["label"] for r in results["summary"]] == ["norm-only lr=0.01", "norm-only lr=0.1", "full"]
    assert {r["family"] for r in results["runs"]} == {"norm-only", "full"}
    report = (tmp_path / "s" / "report.md").read_text()
    assert "| norm-only lr=0.01 |" in report and "Not dominated by any SMF setting beyond noise: norm-only lr=0.01, norm-only lr=0.1, full" in report


@pytest.mark.slow
def test_toy_method_through_a_stream(toy_registered, tiny_folder, tmp_path, monkeypatch):
    """A stream runs a registered method through its hooks: each chunk continues from the last
    chunk's saved model (Method.continue_from), and a method that saves whole models keeps only
    the last one (Method.saves_compactly)."""
    from test_stream import stream_raw

    from smf.models import load_model
    from smf.study.config import StudyConfig
    from smf.study.runner import run_study

    raw = stream_raw(tiny_folder, chunks=2)
    raw.update(methods={"norm-only": {"lr": 1e-2}}, train={**raw["train"], "steps": 1})
    raw["evaluation"] = {"task": raw["evaluation"]["task"], "probes": raw["evaluation"]["probes"]}
    continued = []
    real = NormOnlyMethod.continue_from.__func__
    monkeypatch.setattr(NormOnlyMethod, "continue_from", classmethod(
        lambda cls, saved, start, merge: continued.append([p.parent.name for p in saved]) or real(cls, saved, start, merge=merge)))
    results = run_study(StudyConfig.from_dict(raw), tmp_path / "s", progress=False)
    assert [r["label"] for r in results["summary"]] == ["norm-only"] and len(results["runs"][0]["matrix"]) == 2
    run = tmp_path / "s" / "runs" / "norm-only" / "seed0"
    assert continued == [["chunk1"]]  # chunk 2 started from chunk 1's saved model
    assert not (run / "chunk1" / "model").exists() and (run / "chunk2" / "model").is_dir()
    before, _ = load_model(tiny_folder)
    after, _ = load_model(run / "chunk2" / "model")
    old, new = dict(before.named_parameters()), dict(after.named_parameters())
    assert sorted(n for n in old if not torch.equal(old[n], new[n])) == ["model.norm.weight"]
