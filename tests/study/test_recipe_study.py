"""configs/published/smf-on-qwen-medmcqa.yaml end to end on a tiny model with local files in the hub
schemas (as tests/study/test_study.py runs every config): two seeds, each drawing its own training
rows and its own memory model (seed: run), the KL and TF-IDF arms, and the healed row; and its bad
input refused at load."""

import json

import pytest
import torch
import yaml
from safetensors import safe_open

from conftest import forbid_model_loading, refused_at_load
from smf.cli import main
from smf.config import read_config
from smf.study.config import StudyConfig
from smf.study.runner import run_study
from test_study import FIXTURES, ROOT, shrink

PUBLISHED = ROOT / "configs" / "published" / "smf-on-qwen-medmcqa.yaml"
RECIPE_MEDMCQA = FIXTURES / "recipe" / "inputs" / "medmcqa_train.jsonl"


@pytest.mark.slow
def test_published_config_per_seed_with_tfidf_kl_and_healed_rows(tiny_folder, tmp_path):
    raw = shrink(read_config(PUBLISHED), tiny_folder)
    raw["seeds"] = [0, 1]
    raw["methods"] = {k: v for k, v in raw["methods"].items() if k in ("smf-kl", "smf-tfidf")}
    raw["data"] = {**raw["data"], "source": str(RECIPE_MEDMCQA), "split": "train", "sample": 10}  # 10 of 35: per seed
    raw["heal"]["data"] = {**raw["heal"]["data"], "sample": 20}  # 20 of the 43 messages kept: per seed
    raw["curve"] = {"every": 0}
    config = StudyConfig.from_dict(raw)
    assert config.evaluation.healed and config.data["seed"] == "run"
    path = tmp_path / "smf-on-qwen-medmcqa.yaml"
    path.write_text(yaml.safe_dump(raw))
    study = tmp_path / "study"
    assert main(["compare", "--config", str(path), "--out", str(study)]) == 0  # as a user runs it
    results = json.loads((study / "results.json").read_text())
    for seed in (0, 1):  # a memory model per seed, healed, with its background
        assert (study / "heal" / f"seed{seed}" / "model" / "background.safetensors").is_file()
        assert (study / "healed" / f"seed{seed}" / "result.json").is_file()
    data = {seed: json.loads((study / "runs" / "smf-kl" / f"seed{seed}" / "fingerprint.json").read_text())["data"] for seed in (0, 1)}
    assert data[0] != data[1]  # each seed trains on its own sample
    healed_on = {seed: json.loads((study / "heal" / f"seed{seed}" / "fingerprint.json").read_text())["data"] for seed in (0, 1)}
    assert healed_on[0] != healed_on[1]  # and heals on its own
    assert results["healed"]["seeds"] == [0, 1]
    report = (study / "report.md").read_text()
    assert "| **healed** (before training) |" in report and "| smf-kl |" in report and "| smf-tfidf |" in report
    # the model half as the study: its layer, drawn per seed; its selection, padded counts and own-mean loss
    drawn = {}
    for seed in (0, 1):
        folder = study / "memory_model" / f"seed{seed}"
        assert json.loads((folder / "smf_memory.json").read_text())["memory"]["variant"] == "published"
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            drawn[seed] = f.get_tensor(next(k for k in f.keys() if k.endswith("memory.values")))
    assert not torch.equal(drawn[0], drawn[1])
    for arm in ("smf-kl", "smf-tfidf"):
        trained = json.loads((study / "runs" / arm / "seed0" / "train_config.json").read_text())
        assert (trained["scoring"], trained["count"], trained["micro_batch_loss"]) == ("published", "padded", "own_mean")



@pytest.mark.parametrize("path", sorted(PUBLISHED.parent.glob("*.yaml")), ids=lambda p: p.stem)
def test_published_configs_use_the_studys_model_half(path):
    """The study's layer drawn per seed, its selection on padded counts, TriviaQA decoded as it decodes; in the
    MedMCQA study also its own-mean SMF loss and bf16 full finetuning (the continual pipeline's training is smf's)."""
    config = StudyConfig.from_dict(read_config(path))
    assert config.memory.variant == "published" and config.memory.seed_per_run
    medmcqa = path.stem.startswith("smf-on-qwen-medmcqa")
    for run in config.runs():
        s = run.settings
        if s["method"] == "smf":
            assert (s["scoring"], s["count"]) == ("published", "padded"), run.label
            assert s.get("micro_batch_loss") == ("own_mean" if medmcqa else None), run.label
        if s["method"] == "full":
            assert s.get("weights") == ("bf16" if medmcqa else None)
    tasks = [config.evaluation.task, *config.evaluation.probes]
    trivia = [t for t in tasks if isinstance(t, dict) and t["name"] == "triviaqa-published"]
    assert trivia and all(t["decoding"] == "generation_config" for t in trivia)


BAD = [
    ("data: {name: medmcqa, template: study}\n", "data: unknown template 'study'; choose one of lm-eval, published"),
    (f"data: {{name: oasst1, source: {FIXTURES / 'recipe' / 'inputs' / 'oasst1_train.jsonl'}, lang: en, role: assistant, "
     "rank: [0, 1], min_chars: 100000}\n", "no OASST1 message of 156 is left by the filters"),
    (f"heal: {{data: {{name: oasst1, source: {FIXTURES / 'recipe' / 'inputs' / 'oasst1_train.jsonl'}, lang: en, role: assistant, "
     "min_chars: 100000}, steps: 2}\n", "no OASST1 message of 156 is left by the filters (lang='en', role='assistant', min_chars=100000)"),
    (f"background: {{data: {{name: oasst1, source: {FIXTURES / 'recipe' / 'inputs' / 'oasst1_train.jsonl'}, lang: fr}}}}\n",
     "no OASST1 message of 156 is left by the filters (lang='fr')"),
    ("heal: {data: {name: oasst1, role: bot}}\n", "heal.data: role 'bot' is no OASST1 role"),
    ("background: {data: {name: oasst1, rank: -1}}\n", "background.data: rank must be a rank >= 0"),
    ("heal: {data: pydoc, steps: 50, warmup_steps: 100}\n", "heal.warmup_steps: a warm-up of 100 steps is longer than the heal's 50 steps"),
    ("evaluation: {task: facts, healed: true}\n", "evaluation.healed: a healed row needs a heal"),
]


@pytest.mark.parametrize("text, message", BAD, ids=["template", "filter-empty", "heal-filter-empty", "background-filter-empty",
                                                   "role", "rank", "warmup", "healed"])
def test_bad_recipe_input_is_one_line_at_load(tmp_path, capsys, monkeypatch, text, message):
    text = text if "evaluation" in text else text + "evaluation: {task: facts}\n"
    refused_at_load("methods: {smf-kl: {}}\n" + text, tmp_path, capsys, monkeypatch, message)


CLI_BAD = [
    (["heal", "--data", f"oasst1:source={FIXTURES / 'recipe' / 'inputs' / 'oasst1_train.jsonl'},lang=fr", "--steps", "2"],
     "no OASST1 message of 156 is left by the filters (lang='fr')"),
    (["heal", "--data", f"oasst1:source={FIXTURES / 'recipe' / 'inputs' / 'oasst1_train.jsonl'},lang=en,role=assistant,min_chars=50",
      "--pack", "false", "--epochs", "2", "--batch-size", "16", "--warmup-steps", "100"],
     "a warm-up of 100 steps is longer than the heal's 7 steps (2 epochs of 56 sequences in batches of 16)"),
    (["train", "--data", "medmcqa:template=study"], "--data: unknown template 'study'; choose one of lm-eval, published"),
]


@pytest.mark.parametrize("args, message", CLI_BAD, ids=["heal-filter-empty", "heal-warmup", "train-template"])
def test_bad_recipe_input_on_the_command_line_is_one_line(tmp_path, capsys, monkeypatch, args, message):
    """smf heal and smf train refuse the same input before any model is read: exit 2, one line."""
    forbid_model_loading(monkeypatch, "the input was checked")
    out = tmp_path / "out"
    assert main([*args, "--model", str(tmp_path / "no-model"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("smf: error: ") and message in err[0], err
    assert not out.exists()


def test_hub_heal_data_that_a_filter_empties_fails_before_any_model_work(tmp_path, monkeypatch):
    """A hub source cannot be read when the config loads; its filters are tried before the base model is."""
    from smf.data import hub
    from smf.errors import SmfError

    rows = [json.loads(line) for line in (FIXTURES / "recipe" / "inputs" / "oasst1_train.jsonl").read_text().splitlines()]
    monkeypatch.setattr(hub, "_hub_rows", lambda *a, **k: rows)  # the hub's OASST1, offline

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the heal data was read")

    monkeypatch.setattr("smf.study.runner.resolve_model", no_model)
    config = StudyConfig.from_dict({"methods": {"smf-kl": {}}, "evaluation": {"task": "facts", "probes": []},
                                    "heal": {"data": {"name": "oasst1", "lang": "de", "role": "assistant", "min_chars": 2000},
                                             "steps": 2}, "seeds": [0, 1]})
    with pytest.raises(SmfError, match=r"no OASST1 message of 156 is left by the filters \(lang='de'"):
        run_study(config, tmp_path / "study", progress=False)
