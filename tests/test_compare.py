"""`smf compare`: every shipped config resolves and runs end to end on a tiny model.

Each config runs as written except for size: a tiny random Llama (24 layers, so every
config's memory layer indices exist) instead of the real model, 2 training steps, a
few evaluation items, and local fixture files in the hub datasets' schemas instead of
the hub.
"""

import json
from pathlib import Path

import pytest
import yaml

from conftest import tiny_model
from smf.cli import main
from smf.compare import StudyConfig, _choose_on_validation, run_study

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
HUB_FILES = {
    "medmcqa": FIXTURES / "medmcqa_validation.jsonl",
    "triviaqa": FIXTURES / "trivia_qa_rc_nocontext_validation.jsonl",
    "wikitext": FIXTURES / "wikitext_document_level_test.jsonl",
    "triviaqa-facts": FIXTURES / "trivia_qa_rc_nocontext_validation.jsonl",
}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from smf.models import load_tokenizer

    path = tmp_path_factory.mktemp("tiny") / "model"
    tokenizer = load_tokenizer()
    model = tiny_model(vocab_size=len(tokenizer), num_hidden_layers=24, hidden_size=32, intermediate_size=64)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _local(spec, limit):
    """A task or data spec pointed at a fixture file and cut to `limit` items."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    if spec["name"] in HUB_FILES:
        spec["source"] = str(HUB_FILES[spec["name"]])
        if "split" in spec or spec["name"] in ("triviaqa-facts", "medmcqa"):
            spec["split"] = "validation" if spec["name"] != "wikitext" else "test"
    if limit:
        spec["limit"] = limit
    return spec


def shrink(raw: dict, model: Path) -> dict:
    raw = dict(raw, model=str(model), seeds=[0])
    raw["background"] = {**raw.get("background", {}), "batches": 2, "batch_size": 2, "max_length": 32}
    if raw["background"].get("data") == "wikitext":
        raw["background"]["data"] = {"name": "wikitext", "source": str(FIXTURES / "wikitext_document_level_test.jsonl"), "split": "test"}
    raw["data"] = _local(raw["data"], None)
    raw["train"] = {**raw.get("train", {}), "steps": 2, "batch_size": 2, "grad_accum": 1, "max_length": 48, "warmup_steps": 0}
    raw["task"] = _local(raw["task"], 4)
    raw["extra_tasks"] = [_local(t, 4) for t in raw.get("extra_tasks", [])]
    raw["probes"] = [_local(p, 2 if "pydoc" in str(p) or "wikitext" in str(p) else 4) for p in raw.get("probes", [])]
    if raw.get("selection"):
        raw["selection"] = _local(raw["selection"], 4)
    raw["selection_probes"] = [_local(p, 1 if "pydoc" in str(p) else 4) for p in raw.get("selection_probes", [])]
    raw["curve"] = {"every": 1, "limit": 2}
    return raw


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_runs_end_to_end(path, tiny_folder, tmp_path):
    raw = yaml.safe_load(path.read_text())
    config = StudyConfig.from_dict(shrink(raw, tiny_folder))
    results = run_study(config, tmp_path / "study", progress=False)
    labels = [r.label for r in config.runs()]
    assert [row["label"] for row in results["summary"]] == labels
    for run in results["runs"]:
        assert run["metrics"].keys() == results["base"].keys()
        assert [c["step"] for c in run["curve"] if "loss" in c] == [1, 2]
        assert run["train_tokens_per_s"] > 0
    for name in ("results.json", "report.md", "tradeoff.png", "curves.png"):
        assert (tmp_path / "study" / name).is_file(), name
    report = (tmp_path / "study" / "report.md").read_text()
    assert "| **base** |" in report and all(f"| {label}" in report for label in labels)
    # a second run finds everything done and changes nothing
    before = (tmp_path / "study" / "results.json").read_text()
    run_study(config, tmp_path / "study", progress=False)
    assert json.loads(before)["runs"] == json.loads((tmp_path / "study" / "results.json").read_text())["runs"]


def test_resume_skips_finished_runs(tiny_folder, tmp_path, monkeypatch):
    raw = shrink(yaml.safe_load((ROOT / "configs" / "offline.yaml").read_text()), tiny_folder)
    config = StudyConfig.from_dict(raw)
    run_study(config, tmp_path / "s", progress=False)
    calls = []
    monkeypatch.setattr("smf.train.train", lambda *a, **k: calls.append(a))
    run_study(config, tmp_path / "s", progress=False)
    assert calls == []


def write(tmp_path, text):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("methods: {smf-tfidf: {}}\nstepz: 3\n", "unknown key(s) stepz"),
        ("methods: {adapters: {}}\n", "unknown method 'adapters'"),
        ("methods: {lora: {lr_rate: 1}}\n", "unknown key(s) lr_rate"),
        ("data: missing-file.jsonl\nmethods: {lora: {}}\n", "missing-file.jsonl: file not found"),
        ("task: nonsense\n", "unknown task 'nonsense'"),
        ("memory: {slots: 1000}\n", "perfect square"),
        ("selection_min_gain: lots\n", "selection_min_gain must be a number"),
        ("selection_tolerance: -1\n", "selection_tolerance must be a number"),
        ("selection_tolerance: null\n", "selection_tolerance must be a number"),
    ],
)
def test_bad_config_is_one_line(tmp_path, capsys, text, message):
    out = tmp_path / "out"
    assert main(["compare", "--config", str(write(tmp_path, text)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (out / "results.json").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["compare", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_folder_of_another_study_is_refused(tiny_folder, tmp_path, capsys):
    raw = shrink(yaml.safe_load((ROOT / "configs" / "offline.yaml").read_text()), tiny_folder)
    raw["methods"] = {"lora": {"lr": 1e-3}}
    first = write(tmp_path, yaml.safe_dump(raw))
    assert main(["compare", "--config", str(first), "--out", str(tmp_path / "s")]) == 0
    results = (tmp_path / "s" / "results.json").read_text()
    raw["methods"] = {"lora": {"lr": 2e-3}}
    second = tmp_path / "other.yaml"
    second.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["compare", "--config", str(second), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "holds a different study (differs in: methods)" in err
    assert (tmp_path / "s" / "results.json").read_text() == results


def test_a_study_may_grow_by_new_methods(tiny_folder, tmp_path, monkeypatch):
    raw = shrink(yaml.safe_load((ROOT / "configs" / "offline.yaml").read_text()), tiny_folder)
    raw["methods"] = {"lora": {"lr": 1e-3}}
    assert main(["compare", "--config", str(write(tmp_path, yaml.safe_dump(raw))), "--out", str(tmp_path / "s")]) == 0
    lora_result = tmp_path / "s" / "runs" / "lora" / "seed0" / "result.json"
    before = lora_result.read_bytes()

    import smf.train

    trained = []
    real_train = smf.train.train
    monkeypatch.setattr("smf.train.train", lambda *a, **k: trained.append(a[3].method) or real_train(*a, **k))
    raw["methods"]["full"] = {"lr": 1e-4}
    assert main(["compare", "--config", str(write(tmp_path, yaml.safe_dump(raw))), "--out", str(tmp_path / "s")]) == 0
    assert trained == ["full"]  # the finished LoRA run is kept; only the new method trains
    assert lora_result.read_bytes() == before
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert sorted(r["label"] for r in results["summary"]) == ["full", "lora"]
    assert json.loads((tmp_path / "s" / "study.json").read_text())["methods"] == raw["methods"]


def test_plot_lines_follow_config_entries():
    from smf.compare import entry_of

    assert entry_of("lora lr=0.001") == "lora" and entry_of("smf-tfidf top_t=100") == "smf-tfidf"
    assert entry_of("lora r4") == "lora r4" and entry_of("full") == "full"


def _row(label, gain, drifts):
    row = {"label": label, "family": label.split(" ")[0], "val": {"value": {"mean": 25 + gain}, "delta": {"mean": gain}}}
    row.update({p: {"delta": {"mean": d}} for p, d in drifts.items()})
    return row


SWEEP = [  # validation gain (points) and validation probe drifts of each setting
    _row("smf-tfidf t=100", 8.0, {"ppl": 0.1, "cap": -3.0}),
    _row("smf-tfidf t=300", 29.0, {"ppl": 0.2, "cap": -10.0}),
    _row("smf-tfidf t=500", 45.0, {"ppl": 0.4, "cap": -15.0}),
    _row("smf-tfidf t=1000", 64.0, {"ppl": 0.4, "cap": -9.0}),
    _row("lora lr=1", 5.0, {"ppl": 12.0, "cap": 2.0}),
    _row("lora lr=2", 59.0, {"ppl": 93.0, "cap": -25.0}),
    _row("full", 70.0, {"ppl": 30.0, "cap": -30.0}),  # a single setting: nothing to choose
]


def test_tolerance_rule_takes_the_best_score_within_tolerance_else_least_drift():
    chosen = _choose_on_validation(SWEEP, "val", ["ppl", "cap"], tolerance=5.0)
    assert chosen == {"smf-tfidf": "smf-tfidf t=100", "lora": "lora lr=1"}
    chosen = _choose_on_validation(SWEEP, "val", ["ppl", "cap"], tolerance=10.0)
    assert chosen["smf-tfidf"] == "smf-tfidf t=1000"  # best score among t=100, t=300, t=1000


def test_min_gain_rule_takes_the_least_drift_among_enough_gain_else_largest_gain():
    chosen = _choose_on_validation(SWEEP, "val", ["ppl", "cap"], tolerance=5.0, min_gain=30.0)
    # t=500 and t=1000 gain ≥ 30 and t=1000 drifts less (9 vs 15); only lr=2 of LoRA gains 30.
    assert chosen == {"smf-tfidf": "smf-tfidf t=1000", "lora": "lora lr=2"}
    chosen = _choose_on_validation(SWEEP, "val", ["ppl", "cap"], tolerance=5.0, min_gain=80.0)
    assert chosen == {"smf-tfidf": "smf-tfidf t=1000", "lora": "lora lr=2"}  # none gains 80: the largest gain
    chosen = _choose_on_validation(SWEEP, "val", ["ppl", "cap"], tolerance=5.0, min_gain=0.0)
    assert chosen["smf-tfidf"] == "smf-tfidf t=100"  # every setting qualifies: the least drift
