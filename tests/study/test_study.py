"""`smf compare` (smf.study): every shipped config resolves and runs end to end on a tiny model.

Each config runs as written except for size: a tiny random Llama (24 layers, so every
config's memory layer indices exist) instead of the real model, 2 training steps, a
few evaluation items, and local fixture files in the hub datasets' schemas instead of
the hub.
"""

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import refused_at_load
from smf.config import read_config
from smf.evaluate.tasks import get_form
from smf.cli import main
from smf.study.config import StudyConfig, entry_of
from smf.study.results import choose_on_validation
from smf.study.runner import run_study

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
# Every starting config, and each study's own (studies/offline/config.yaml links to configs/offline.yaml: run once).
CONFIGS = sorted({p.resolve(): p for p in [*(ROOT / "studies").glob("*/config.yaml"), *(ROOT / "configs").rglob("*.yaml")]}.values())
CONFIGS = [p for p in CONFIGS if "methods" in read_config(p)]  # a shared setting (base:) is not a study by itself
HUB_FILES = {
    "medmcqa": FIXTURES / "medmcqa_validation.jsonl",
    "triviaqa": FIXTURES / "trivia_qa_rc_nocontext_validation.jsonl",
    "wikitext": FIXTURES / "wikitext_document_level_test.jsonl",
    "triviaqa-facts": FIXTURES / "trivia_qa_rc_nocontext_validation.jsonl",
    "medmcqa-published": FIXTURES / "parity" / "medmcqa_parity.jsonl",
    "triviaqa-published": FIXTURES / "parity" / "triviaqa_parity.jsonl",
    "wikitext-103-published": FIXTURES / "parity" / "wikitext_parity.jsonl",
    "oasst1": FIXTURES / "recipe" / "inputs" / "oasst1_train.jsonl",  # 156 messages: the published filters keep 43
    "nq-open": FIXTURES / "nq_open_validation.jsonl",
}


def _local(spec, limit):
    """A task or data spec pointed at a fixture file and cut to `limit` items (a perplexity task to
    one document: its documents run to thousands of tokens, and one exercises the same code; an
    answer to 4 tokens: a random model never stops early)."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    kind = get_form(spec["name"], "eval")[1].kind if limit else None
    if kind == "perplexity":
        limit = 1
    elif kind == "qa":
        spec["max_new_tokens"] = 4
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
    elif isinstance(raw["background"].get("data"), dict):
        raw["background"]["data"] = _local(raw["background"]["data"], None)
    if raw.get("heal"):
        raw["heal"] = {**raw["heal"], "data": _local(raw["heal"]["data"], None), "steps": 2, "batch_size": 2, "grad_accum": 1, "max_length": 32}
        raw["heal"].pop("epochs", None)
        raw["heal"].pop("warmup_steps", None)
    raw["data"] = _local(raw["data"], None)
    raw["train"] = {**raw.get("train", {}), "steps": 2, "batch_size": 2, "grad_accum": 1, "max_length": 48, "warmup_steps": 0}
    raw["train"].pop("epochs", None)
    raw["train"].pop("mixed_precision", None)  # bf16 autocast on a CPU is slow and not what these tests check
    for settings in raw.get("methods", {}).values():
        settings.pop("grad_accum", None)
        for key, value in settings.items():  # a sweep of two settings runs the sweep's code as five do
            if isinstance(value, list):
                settings[key] = value[:2]
    ev = dict(raw.get("evaluation", {}))
    ev["task"] = _local(ev["task"], 4)
    ev["extra_tasks"] = [_local(t, 4) for t in ev.get("extra_tasks", [])]
    ev["probes"] = [_local(p, 4) for p in ev.get("probes", [])]
    raw["evaluation"] = ev
    val = dict(raw.get("validation", {}))
    if val.get("task"):
        val["task"] = _local(val["task"], 4)
    val["probes"] = [_local(p, 4) for p in val.get("probes", [])]
    raw["validation"] = val
    raw["curve"] = {"every": 1, "limit": 2}
    if raw.get("stream"):
        raw["stream"] = {**raw["stream"], "chunks": 2}
    return raw


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT).with_suffix("")) for p in CONFIGS])
def test_config_runs_end_to_end(path, tiny_folder, tmp_path, monkeypatch):
    raw = read_config(path)
    config = StudyConfig.from_dict(shrink(raw, tiny_folder))
    results = run_study(config, tmp_path / "study", progress=False)
    labels = [r.label for r in config.runs()]
    assert [row["label"] for row in results["summary"]] == labels
    if config.stream.chunks is not None:  # a continual stream (tests/study/test_stream.py reads it closely)
        assert all(len(run["matrix"]) == 2 for run in results["runs"])
        for name in ("results.json", "report.md", "retention.png", "stream.png"):
            assert (tmp_path / "study" / name).is_file(), name
        return
    for run in results["runs"]:
        assert run["metrics"].keys() == results["base"].keys()
        assert [c["step"] for c in run["curve"] if "loss" in c] == [1, 2]
        assert run["train_tokens_per_s"] > 0
    for name in ("results.json", "report.md", "tradeoff.png", "curves.png"):
        assert (tmp_path / "study" / name).is_file(), name
    report = (tmp_path / "study" / "report.md").read_text()
    assert "| **base** |" in report and all(f"| {label}" in report for label in labels)
    # a second run finds everything done: it trains nothing and changes nothing
    before = (tmp_path / "study" / "results.json").read_text()
    calls = []
    monkeypatch.setattr("smf.study.runner.train", lambda *a, **k: calls.append(a))
    run_study(config, tmp_path / "study", progress=False)
    assert calls == []
    assert json.loads(before)["runs"] == json.loads((tmp_path / "study" / "results.json").read_text())["runs"]


@pytest.mark.slow
def test_a_curves_last_point_and_the_base_curve_come_from_the_evaluations(tiny_folder, tmp_path, monkeypatch):
    """The evaluation points during training score the task's and probes' first items; at the last step they are
    taken from the final evaluation's records (not scored again), and the base curve from the base evaluation's."""
    from smf.evaluate.evaluator import first_items_headline

    raw = shrink(read_config(ROOT / "configs" / "offline.yaml"), tiny_folder)
    raw["methods"] = {"lora": raw["methods"]["lora"]}
    config = StudyConfig.from_dict(raw)
    scored = []
    real = run_study.__globals__["evaluate"]
    monkeypatch.setitem(run_study.__globals__, "evaluate", lambda m, t, tasks, **kw: scored.append(len(tasks)) or real(m, t, tasks, **kw))
    results = run_study(config, tmp_path / "study", progress=False)
    assert len(scored) == 3  # base, the curve point at step 1, the final evaluation: nothing scored twice
    run = results["runs"][0]
    points = [c for c in run["curve"] if "eval" in c]
    assert [c["step"] for c in points] == [1, 2]
    final = json.loads((tmp_path / "study" / "runs" / "lora" / "seed0" / "result.json").read_text())["tasks"]
    base = json.loads((tmp_path / "study" / "base" / "result.json").read_text())["tasks"]
    for label, value in points[-1]["eval"].items():
        n = 1 if final[label]["kind"] == "perplexity" else 2  # the curve's documents and limit (shrink)
        assert value == first_items_headline(final[label], n)
        assert results["base_curve"][label] == first_items_headline(base[label], n)
    assert set(points[-1]["eval"]) == set(points[0]["eval"]) == set(results["base_curve"]) == {"facts", "pydoc", "capitals", "world"}


def write(tmp_path, text):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


BAD_CONFIGS = [  # each is refused at load, before any model work, with one line naming the fix
    ("stepz: 3\n", "unknown key 'stepz'"),
    ("train: {stepz: 3}\n", "train: unknown key 'stepz'; did you mean 'steps'?"),
    ("methods: {lora: {lr_rate: 1}}\n", "methods.lora: unknown key 'lr_rate'; did you mean 'lr'?"),
    ("memory: {slotz: 4}\n", "memory: unknown key 'slotz'; did you mean 'slots'?"),
    ("curve: {evry: 5}\n", "curve: unknown key 'evry'; did you mean 'every'?"),
    ("heal: {data: pydoc, stepz: 3}\n", "heal: unknown key 'stepz'; did you mean 'steps'?"),
    ("heal: {steps: 3}\n", "heal: give the general text to heal on"),
    ("evaluation: {task: {name: medmcqa-published, format: publshed}}\n", "format must be one of"),
    ("methods: {smf-kl: {train_scale: true}}\n", "train_scale needs optimizer adamw_masked"),
    ("train: {loss: everything}\n", "loss: unknown choice 'everything'"),
    ("train: {epochs: 0}\n", "epochs must be > 0"),
    ("data: {name: facts, n_factz: 3}\n", "facts has no option 'n_factz'; did you mean 'n_facts'?"),
    ("evaluation: {probes: [{name: pydoc, limt: 3}]}\n", "unknown option 'limt'; did you mean 'limit'?"),
    ("methods: {adapters: {}}\n", "unknown method 'adapters'"),
    ("methods: {smf-bm25: {}}\n", "unknown method 'smf-bm25'"),
    ("methods: {smf-tf: {optimizer: adamw}}\n", "unknown choice 'adamw'; choose one of adam, sgd, rowwise_adagrad, adamw_masked; did you mean 'adam'?"),
    ("methods: {smf-tfidf: {rule: kl}}\n", "'rule' is set by the family smf-tfidf"),
    ("methods: {lora: {optimizer: sgd}}\n", "'optimizer' is an option of smf, not of lora"),
    ("train: {top_t: 300}\n", "'top_t' is an option of smf; set it in their entries under methods"),
    ("train: {steps: three}\n", "train.steps: expected an integer, got text 'three'"),
    ("methods: {smf-tfidf: {top_t: '300'}}\n", "top_t: expected an integer, got text '300'"),
    ("methods: {lora: {lr: fast}}\n", "lr: expected a number or null, got text 'fast'"),
    ("seeds: 0\n", "seeds: expected a list"),
    ("memory: {slots: 1000}\n", "perfect square"),
    ("validation: {min_gain: lots}\n", "min_gain: expected a number or null"),
    ("tolerance: -1\n", "tolerance: must be a number of points >= 0"),
    ("tolerance: null\n", "tolerance: expected a number, got nothing"),
    ("background: {batches: 0}\n", "batches must be >= 1"),
    ("evaluation: {task: facts, generate_batch_size: 0}\n", "evaluation.generate_batch_size: must be >= 1, got 0"),
    ("evaluation: {task: nonsense}\n", "unknown task 'nonsense'"),
    ("data: missing-file.jsonl\n", "missing-file.jsonl: file not found"),
    ("selection_min_gain: 30\n", "selection_min_gain: this key is now 'validation.min_gain'"),
    ("selection_tolerance: 5\n", "selection_tolerance: this key is now 'tolerance'"),
    ("task: facts\n", "task: this key is now 'evaluation.task'"),
    ("methods: {lora r4: {lora_r: 4}}\n", "methods.lora r4.lora_r: this key is now 'rank'"),
    ("methods: {smf-kl: {selection: kl}}\n", "selection: this key is now 'rule'"),
    ("train: {eval_every: 5}\n", "'eval_every' is not a training setting: evaluation points during training are a study's curve.every"),
    ("evaluation: {task: facts, probes: [capitals]}\nvalidation: {task: facts-val, probes: [{name: capitals-val, offset: 30}]}\n",
     "the validation task capitals-val scores items of the reported task capitals"),
    ("evaluation: {task: facts, probes: [{name: pydoc, limit: 8}]}\nvalidation: {task: facts-val, probes: [{name: pydoc, limit: 2}]}\n",
     "the validation task pydoc scores items of the reported task pydoc"),
    ("evaluation: {task: facts, probes: [world]}\nvalidation: {task: facts-val, probes: [{name: world-val, half: test}]}\n",
     "the validation task world-val scores items of the reported task world"),
    ("evaluation: {task: facts, probes: [world]}\nvalidation: {task: facts-val, probes: [{name: world, per_kind: 50, as: w}]}\n",
     "the validation task w scores items of the reported task world"),
    ("evaluation: {task: facts, probes: [pydoc], probes_apart_from_background: true}\nbackground: {data: pydoc}\n",
     "the evaluation probe pydoc is drawn from pydoc_data.topics, the text the background statistics count"),
    ("evaluation: {task: facts, probes: [docstrings], probes_apart_from_background: true}\n"
     "validation: {task: facts-val, probes: [pydoc-val]}\nbackground: {data: pydoc}\n",
     "the validation probe pydoc-val is drawn from pydoc_data.topics"),
    ("", "the study config is empty"),
    ("name: x\n", "has no 'methods'"),
]


@pytest.mark.parametrize("text, message", BAD_CONFIGS)
def test_bad_config_is_one_line_at_load(tmp_path, capsys, monkeypatch, text, message):
    if "methods" not in text and text and not text.startswith("name:"):
        text = "methods: {smf-tfidf: {}, lora: {}}\n" + text
    refused_at_load(text, tmp_path, capsys, monkeypatch, message)


def test_missing_config_file(tmp_path, capsys):
    assert main(["compare", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "config file not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def lora_study(tiny_folder, tmp_path_factory):
    """A finished study of one LoRA setting (the offline config, shrunk), run once through `smf
    compare`: (its config, its folder). A test copies the folder before it runs there again."""
    raw = shrink(read_config(ROOT / "configs" / "offline.yaml"), tiny_folder)
    raw["methods"] = {"lora": {"lr": 1e-3}}
    root = tmp_path_factory.mktemp("lora_study")
    assert main(["compare", "--config", str(write(root, yaml.safe_dump(raw))), "--out", str(root / "s")]) == 0
    return raw, root / "s"


@pytest.mark.slow
def test_folder_of_another_study_is_refused(lora_study, tmp_path, capsys):
    raw, done = copy.deepcopy(lora_study[0]), lora_study[1]
    shutil.copytree(done, tmp_path / "s")
    results = (tmp_path / "s" / "results.json").read_text()
    raw["methods"] = {"lora": {"lr": 2e-3}}
    second = tmp_path / "other.yaml"
    second.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["compare", "--config", str(second), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "holds a different study (differs in: methods)" in err
    assert (tmp_path / "s" / "results.json").read_text() == results


@pytest.mark.slow
def test_a_study_may_grow_by_new_methods(lora_study, tmp_path, monkeypatch):
    raw, done = copy.deepcopy(lora_study[0]), lora_study[1]
    shutil.copytree(done, tmp_path / "s")
    lora_result = tmp_path / "s" / "runs" / "lora" / "seed0" / "result.json"
    before = lora_result.read_bytes()

    import smf.train

    trained = []
    real_train = smf.train.train
    monkeypatch.setattr("smf.study.runner.train", lambda *a, **k: trained.append(a[3].method) or real_train(*a, **k))
    raw["methods"]["full"] = {"lr": 1e-4}
    assert main(["compare", "--config", str(write(tmp_path, yaml.safe_dump(raw))), "--out", str(tmp_path / "s")]) == 0
    assert trained == ["full"]  # the finished LoRA run is kept; only the new method trains
    assert lora_result.read_bytes() == before
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert sorted(r["label"] for r in results["summary"]) == ["full", "lora"]
    assert json.loads((tmp_path / "s" / "study.json").read_text())["methods"] == raw["methods"]


def test_plot_lines_follow_config_entries():
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
    chosen = choose_on_validation(SWEEP, "val", ["ppl", "cap"], tolerance=5.0)
    assert chosen == {"smf-tfidf": "smf-tfidf t=100", "lora": "lora lr=1"}
    chosen = choose_on_validation(SWEEP, "val", ["ppl", "cap"], tolerance=10.0)
    assert chosen["smf-tfidf"] == "smf-tfidf t=1000"  # best score among t=100, t=300, t=1000


def test_min_gain_rule_takes_the_least_drift_among_enough_gain_else_largest_gain():
    chosen = choose_on_validation(SWEEP, "val", ["ppl", "cap"], tolerance=5.0, min_gain=30.0)
    # t=500 and t=1000 gain ≥ 30 and t=1000 drifts less (9 vs 15); only lr=2 of LoRA gains 30.
    assert chosen == {"smf-tfidf": "smf-tfidf t=1000", "lora": "lora lr=2"}
    chosen = choose_on_validation(SWEEP, "val", ["ppl", "cap"], tolerance=5.0, min_gain=80.0)
    assert chosen == {"smf-tfidf": "smf-tfidf t=1000", "lora": "lora lr=2"}  # none gains 80: the largest gain
    chosen = choose_on_validation(SWEEP, "val", ["ppl", "cap"], tolerance=5.0, min_gain=0.0)
    assert chosen["smf-tfidf"] == "smf-tfidf t=100"  # every setting qualifies: the least drift


def test_probes_apart_from_another_background_are_accepted():
    from smf.errors import SmfError
    from smf.study.config import StudyConfig

    config = StudyConfig.from_dict({"methods": {"smf-tfidf": {}}, "background": {"data": "docstrings"},
                                    "evaluation": {"task": "facts", "probes": ["pydoc", "world"], "probes_apart_from_background": True},
                                    "validation": {"task": "facts-val", "probes": ["pydoc-val", "world-val"]}})
    config.check("study")
    with pytest.raises(SmfError, match="probe pydoc is drawn from pydoc_data.topics"):
        StudyConfig.from_dict({**config.to_dict(), "background": {"data": "pydoc"}}).check("study")


EXPERIMENTS = sorted(p for p in (ROOT / "studies").glob("*/*.yaml") if p.name != "config.yaml")


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[str(p.relative_to(ROOT / "studies").with_suffix("")) for p in EXPERIMENTS])
def test_experiment_configs_load(path):
    """A study's further configs (beside its config.yaml) are valid configs of this version."""
    assert StudyConfig.load(path).runs()


@pytest.mark.parametrize("name, grows", [("equal-gain", True), ("smf-seeds", False), ("equal-gain-seeds", False)])
def test_experiments_that_reuse_the_independent_study_share_its_settings(name, grows):
    """Their comments copy offline-independent's base, memory model and finished runs in: valid only
    while every setting that decides a run is the same and the copied runs keep their labels and settings."""
    ours = StudyConfig.load(ROOT / "studies" / "probes" / f"{name}.yaml")
    theirs = StudyConfig.load(ROOT / "studies" / "probes" / "config.yaml")
    mine, source = ours.identity(), theirs.identity()
    assert {k: v for k, v in mine.items() if k != "methods"} == {k: v for k, v in source.items() if k != "methods"}
    shared = {r.label: str(r.settings) for r in ours.runs()}.items() & {r.label: str(r.settings) for r in theirs.runs()}.items()
    assert shared and all(source["methods"].get(label) == mine["methods"][label] for label, _ in shared)
    assert (set(source["methods"]) <= set(mine["methods"])) == grows  # a grown study takes the copied study.json


def test_results_of_several_seeds_carry_the_items_share(tiny_folder, tmp_path):
    """collect_results gives a setting of several seeds the items' standard error of its seed-averaged
    change (seeds_change_stderr), so the report can weigh it beside the seed spread."""
    from smf.names import RESULT_FILE
    from smf.stats import seeds_change_stderr
    from smf.study.results import collect_results

    config = StudyConfig.from_dict(dict(shrink(read_config(ROOT / "configs" / "offline.yaml"), tiny_folder),
                                        seeds=[0, 1]))
    flags = lambda bits: {"kind": "generate", "n": len(bits), "headline": {"metric": "acc", "value": sum(bits) / len(bits),  # noqa: E731
                                                                            "stderr": None},
                          "records": [{"id": str(i), "correct": bool(b)} for i, b in enumerate(bits)]}
    base = {"tasks": {"facts": flags([0, 0, 1, 1, 0, 1])}}
    answers = {0: [1, 0, 1, 1, 1, 1], 1: [1, 1, 1, 0, 0, 1]}
    summary = {"trainable_parameters": 1, "train_tokens_per_s": 1.0, "peak_memory_bytes": 1, "optimizer_state_bytes": 0,
               "train_seconds": 1.0, "final_loss": 1.0}
    run = config.runs()[0]
    for seed, bits in answers.items():
        folder = run.folder(tmp_path, seed)
        folder.mkdir(parents=True)
        (folder / RESULT_FILE).write_text(json.dumps({
            "label": run.label, "family": run.family.label, "settings": run.settings, "summary": summary,
            "wall_seconds": 1.0, "eval_seconds": 1.0, "train_config": {}, "tasks": {"facts": flags(bits)}}))
    row = next(r for r in collect_results(config, tmp_path, base)["summary"] if r["label"] == run.label)
    expected = seeds_change_stderr([flags(answers[0]), flags(answers[1])], base["tasks"]["facts"])
    assert row["facts"]["delta"]["n"] == 2 and expected > 0
    assert row["facts"]["delta_stderr"] == pytest.approx(expected)
