"""Continual streams (`stream:` in a study, smf.study.stream) and `smf inspect` (smf.use.inspect).

A tiny random Llama learns 3 chunks of 7 fictional facts with SMF (background
accumulated over the chunks), LoRA (merged after each chunk) and full finetuning; the
tests read what the stream wrote against what the weights did.
"""

import json
import math
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from conftest import refused_at_load
from smf.config import read_config
from smf.cli import main
from smf.study.config import StudyConfig
from smf.study.runner import run_study
from smf.study.stream import stream_metrics

ROOT = Path(__file__).resolve().parents[2]
SMF = "smf-tfidf_top_t=20"  # the folder of the first SMF setting
FACTS = {"name": "facts", "n_facts": 21, "n_control": 4, "train_wordings": 2, "seed": 0}


def stream_raw(model: Path, **stream) -> dict:
    return {
        "name": "tiny-stream", "model": str(model), "seeds": [0],
        "memory": {"layers": [1, 2], "slots": 1024, "heads": 2, "topk": 4, "key_dim": 16},
        "background": {"data": "pydoc", "batches": 2, "batch_size": 2, "max_length": 32},
        "data": FACTS,
        "train": {"steps": 2, "batch_size": 4, "max_length": 48, "warmup_steps": 0},
        "stream": {"chunks": 3, "background": "accumulate", "lora": "merge", **stream},
        "methods": {"smf-tfidf": {"top_t": [20, 40], "lr": 1.0}, "lora": {"lr": 1e-3}, "full": {"lr": 1e-4}},
        "evaluation": {"task": FACTS, "extra_tasks": [{**FACTS, "name": "facts-control"}], "probes": [{"name": "pydoc", "limit": 1}]},
        "validation": {"task": {**FACTS, "name": "facts-val"}, "probes": [{"name": "pydoc-val", "limit": 1}]},
    }


@pytest.fixture(scope="module")
def stream_dir(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "study"
    results = run_study(StudyConfig.from_dict(stream_raw(tiny_folder)), out, progress=False)
    return out, results


@pytest.mark.slow
def test_stream_writes_matrices_and_figures(stream_dir):
    out, results = stream_dir
    assert [c["facts"] for c in results["chunks"]] == ["0:7", "7:14", "14:21"]
    assert [row["label"] for row in results["summary"]] == ["smf-tfidf top_t=20", "smf-tfidf top_t=40", "lora", "full"]
    # one SMF setting chosen on the validation wording after the last chunk (no reported chunk decides it)
    assert results["validation"]["chosen"]["smf-tfidf"] in ("smf-tfidf top_t=20", "smf-tfidf top_t=40")
    for run in results["runs"]:
        assert len(run["matrix"]) == 3 and all(len(r) == 3 for r in run["matrix"])
        folder = out / "runs" / run["label"].replace(" ", "_") / "seed0"
        assert run == json.loads((folder / "stream.json").read_text())
        # the matrix is read from each chunk's own evaluation
        for i in range(3):
            record = json.loads((folder / f"chunk{i + 1}" / "result.json").read_text())
            assert ("facts-val" in record["tasks"]) == (i == 2)  # validation only at the end
            assert [record["tasks"][f"chunk{j + 1}"]["headline"]["value"] for j in range(3)] == run["matrix"][i]
            assert record["facts"] == results["chunks"][i]["facts"]
    for name in ("results.json", "report.md", "retention.png", "stream.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "backward transfer" in report and "| smf-tfidf top_t=" in report and "**full**" in report
    assert f"| {results['validation']['chosen']['smf-tfidf']} ★ |" in report
    # full finetuning keeps only its last model; SMF keeps every chunk's (small) delta
    assert [(out / "runs" / "full" / "seed0" / f"chunk{k}" / "model").is_dir() for k in (1, 2, 3)] == [False, False, True]
    assert all((out / "runs" / SMF / "seed0" / f"chunk{k}" / "model" / "smf_delta.json").is_file() for k in (1, 2, 3))


@pytest.mark.slow
def test_each_chunk_starts_from_the_last(stream_dir):
    """Chunk k's SMF delta keeps every row chunk k-1 wrote that chunk k did not select."""
    out, _ = stream_dir
    run = out / "runs" / SMF / "seed0"

    def table(k):
        with safe_open(str(run / f"chunk{k}" / "model" / "delta.safetensors"), "pt") as f:
            names = sorted({key.split("::")[0] for key in f.keys()})
            return {n: dict(zip(f.get_tensor(n + "::rows").tolist(), f.get_tensor(n + "::values"))) for n in names}

    def selected(k):
        with safe_open(str(run / f"chunk{k}" / "model" / "selected.safetensors"), "pt") as f:
            return {int(key.split(".")[1]): set(f.get_tensor(key).tolist()) for key in f.keys()}

    before, after, chosen = table(1), table(2), selected(2)
    kept = 0
    for name, rows in before.items():
        layer = int(name.split("layers.")[1].split(".")[0])
        for row, values in rows.items():
            assert row in after[name], "a row chunk 1 wrote went back to its initial value"
            if row not in chosen[layer]:
                assert torch.equal(after[name][row], values)
                kept += 1
    assert kept > 0


@pytest.mark.slow
def test_accumulated_background_grows_by_each_chunk(stream_dir):
    from smf.selection import BackgroundStats

    out, _ = stream_dir
    first = BackgroundStats.load(out / "memory_model")
    after = [BackgroundStats.load(out / "runs" / SMF / "seed0" / f"chunk{k}") for k in (1, 2, 3)]
    # each chunk adds one batch per training batch (7 facts × 2 wordings in batches of 4: 4 batches)
    assert [a.batches for a in after] == [first.batches + 4 * k for k in (1, 2, 3)]
    for layer in first.df:
        assert torch.all(after[0].counts[layer] >= first.counts[layer]) and torch.all(after[2].counts[layer] >= after[1].counts[layer])
        assert after[2].counts[layer].sum() > after[1].counts[layer].sum()


@pytest.mark.slow
def test_a_stopped_stream_resumes_to_the_same_results(stream_dir, tmp_path):
    import shutil

    out, results = stream_dir
    copy = tmp_path / "study"
    shutil.copytree(out, copy)
    for method in (SMF, "lora"):  # (full keeps only its last model: its chunk 3 stays done)
        shutil.rmtree(copy / "runs" / method / "seed0" / "chunk3")
    (copy / "runs" / "lora" / "seed0" / "chunk2" / "result.json").unlink()  # trained, not evaluated: trains again
    shutil.rmtree(copy / "runs" / "lora" / "seed0" / "chunk2" / "model")
    again = run_study(StudyConfig.from_dict(stream_raw(Path(results["config"]["model"]))), copy, progress=False)
    assert [r["matrix"] for r in again["runs"]] == [r["matrix"] for r in results["runs"]]
    assert [r["after"] for r in again["runs"]] == [r["after"] for r in results["runs"]]


@pytest.mark.slow
def test_lora_continue_trains_one_adapter_merge_a_new_one(tiny_folder, tmp_path, capsys):
    raw = stream_raw(tiny_folder, lora="continue", chunks=2, probes_after="last")
    raw["methods"] = {"lora": {"lr": 1e-2}}
    raw.pop("validation")
    results = run_study(StudyConfig.from_dict(raw), tmp_path / "continue", progress=False)
    first_chunk = json.loads((tmp_path / "continue" / "runs" / "lora" / "seed0" / "chunk1" / "result.json").read_text())
    assert set(first_chunk["tasks"]) == {"chunk1", "chunk2"}  # probes_after: last
    assert results["summary"][0]["drift"]["pydoc"]["path"][0] is None and results["summary"][0]["drift"]["pydoc"]["path"][1] is not None
    raw["stream"]["lora"] = "merge"
    config = tmp_path / "merge.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["compare", "--config", str(config), "--out", str(tmp_path / "merge")]) == 0
    assert "| lora |" in capsys.readouterr().out  # the stream's table, printed

    def adapter(where, k):
        with safe_open(str(tmp_path / where / "runs" / "lora" / "seed0" / f"chunk{k}" / "model" / "adapter_model.safetensors"), "pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}

    first = adapter("continue", 1)
    assert all(torch.equal(first[k], v) for k, v in adapter("merge", 1).items())  # chunk 1 is the same run
    # continue: chunk 2's adapter went on from chunk 1's (LoRA's B starts at zero in a new adapter)
    b_continue = [v for k, v in adapter("continue", 2).items() if "lora_B" in k]
    b_merge = [v for k, v in adapter("merge", 2).items() if "lora_B" in k]
    b_first = [v for k, v in first.items() if "lora_B" in k]
    close = lambda a, b: sum(float((x - y).norm()) for x, y in zip(a, b))  # noqa: E731
    assert close(b_continue, b_first) < close(b_merge, b_first)


def test_stream_metrics_from_a_matrix():
    matrix = [[0.75, 0.25, 0.25], [0.50, 1.00, 0.25], [0.50, 0.75, 1.00]]
    m = stream_metrics(matrix, [0.25, 0.25, 0.25])
    assert m["acc_final"] == pytest.approx(75.0)
    assert m["last_gain"] == pytest.approx(75.0)
    assert m["bwt"] == pytest.approx(100 * ((0.50 - 0.75) + (0.75 - 1.00)) / 2)
    assert m["retained"] == pytest.approx([0.5, 2 / 3])
    assert m["retained_min"] == pytest.approx(0.5)
    assert m["mean_learned"] == pytest.approx([75.0, 75.0, 75.0])
    assert stream_metrics([[0.25, 0.5], [0.25, 0.5]], [0.25, 0.5])["retained"] == [None]  # no gain: nothing to keep
    assert m["half_forgotten_after"] is None  # chunk 1 keeps exactly half of its 50 points
    assert stream_metrics([[1.0, 0.25], [0.5, 1.0]], [0.25, 0.25])["half_forgotten_after"] == 2  # 25 of 75 kept


def test_chunks_split_the_facts_in_order():
    config = StudyConfig.from_dict({"methods": {"smf-tfidf": {}}, "stream": {"chunks": 5}})
    chunks = config.stream_chunks()
    assert [c["facts"] for c in chunks] == ["0:12", "12:24", "24:36", "36:48", "48:60"]
    assert chunks[1]["task"]["as"] == "chunk2" and chunks[1]["data"]["facts"] == "12:24"
    explicit = StudyConfig.from_dict({"methods": {"smf-tfidf": {}}, "stream": {"chunks": ["30:60", "0:30"]}})
    assert [c["facts"] for c in explicit.stream_chunks()] == ["30:60", "0:30"]


def test_a_chunk_loads_only_its_facts():
    from smf.data.registry import load

    all_items = load("facts", "eval")
    assert [i.id for i in load("facts", "eval", facts="12:24")] == [i.id for i in all_items[12:24]]
    examples = load("facts", "train", facts="12:24")
    assert examples == load("facts", "train")[12 * 8 : 24 * 8]
    subjects = {i.question.split(" ")[-1].rstrip("?") for i in load("facts", "eval", facts="12:24")}
    assert all(any(s in (e.prompt + e.target) for e in examples) for s in subjects)


BAD_STREAMS = [
    ("stream: {chunks: 1}\n", "a stream needs at least 2 chunks"),
    ("stream: {chunks: ['0:30', '20:60']}\n", "chunks 1 (0:30) and 2 (20:60) share facts"),
    ("stream: {chunks: ['0:30', '30:70']}\n", "'30:70' is not a range of facts"),
    ("stream: {chunks: 3, background: refresh}\n", "unknown background 'refresh'"),
    ("stream: {chunks: 3}\ndata: oasst1\n", "a stream cuts the generated facts into chunks"),
    ("stream: {chunks: 3}\nevaluation: {task: {name: facts, n_facts: 30}}\n", "must ask about the trained facts"),
]


@pytest.mark.parametrize("text, message", BAD_STREAMS)
def test_bad_stream_is_one_line_at_load(tmp_path, capsys, monkeypatch, text, message):
    refused_at_load("methods: {smf-tfidf: {}}\nevaluation: {task: facts}\n" + text, tmp_path, capsys, monkeypatch, message)


@pytest.mark.slow
def test_inspect_rows_written_lie_among_rows_selected(stream_dir, tmp_path, capsys):
    """What inspect says each chunk wrote is what the weights say, and within what the optimizer selected."""
    from smf.models import load_model

    out, _ = stream_dir
    run = out / "runs" / SMF / "seed0"
    assert main(["inspect", str(run), "--out", str(tmp_path / "i"), "--question", "Question: What causes X?\nAnswer:",
                 "--answer", "Y"]) == 0
    report = json.loads((tmp_path / "i" / "inspect.json").read_text())
    assert (tmp_path / "i" / "inspect.png").is_file() and (tmp_path / "i" / "access.png").is_file()
    tables = []
    for source in [out / "memory_model"] + [run / f"chunk{k}" / "model" for k in (1, 2, 3)]:
        model, _ = load_model(source)
        tables.append({int(n.split("layers.")[1].split(".")[0]): p.detach().clone()
                       for n, p in model.named_parameters() if n.endswith("memory.values")})
    for k, stage in enumerate(report["stages"], 1):
        with safe_open(str(run / f"chunk{k}" / "model" / "selected.safetensors"), "pt") as f:
            selected = {int(key.split(".")[1]): set(f.get_tensor(key).tolist()) for key in f.keys()}
        for layer, now in tables[k].items():
            changed = set((now != tables[k - 1][layer]).any(dim=1).nonzero().flatten().tolist())
            assert stage["rows_changed"][str(layer)] == len(changed) > 0
            assert changed <= selected[layer]
        assert stage["changed_outside_selected"] == 0
    assert len(report["jaccard"]) == 3 and report["jaccard"][0][0] == 1.0
    assert report["overlap_vs_forgetting"]["n"] == 3
    assert set(report["question"]["layers"]) == {"1", "2"}
    assert "chunk1: wrote" in capsys.readouterr().out


def test_inspect_refuses_a_folder_without_memory(tiny_folder, tmp_path, capsys):
    assert main(["inspect", str(tiny_folder), "--out", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no memory" in err[0]
    assert not (tmp_path / "i").exists()


def _scored(bits: list[int]) -> dict:
    """An evaluated task whose items (ids 0..n-1) were answered right (1) or wrong (0)."""
    return {"kind": "generate", "n": len(bits), "headline": {"metric": "acc", "value": sum(bits) / len(bits), "stderr": None},
            "records": [{"id": str(i), "correct": bool(b)} for i, b in enumerate(bits)]}


def test_a_probe_change_has_the_same_noise_in_the_study_and_the_stream(tiny_folder, tmp_path):
    """The same records give the same ± in a study's and a stream's report: the seed spread over
    sqrt(seeds) beside the items' standard error of the seed-averaged change, which does not shrink
    with seeds (every seed answers the same items)."""
    from test_study import shrink

    from smf.evaluate.tasks import resolve_task
    from smf.names import RESULT_FILE
    from smf.stats import noise
    from smf.study.results import collect_results
    from smf.study.stream import collect_stream, stream_markdown

    base_bits = [0, 1, 1, 0, 1, 0, 1, 1, 0, 0]
    seeds = {0: [1, 1, 1, 0, 1, 0, 1, 1, 1, 0], 1: [0, 1, 1, 1, 1, 0, 1, 0, 0, 0], 2: [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]}
    stream = StudyConfig.from_dict({**stream_raw(tiny_folder), "seeds": list(seeds), "methods": {"smf-tfidf": {"top_t": 20}},
                                    "evaluation": {"task": FACTS, "probes": [{"name": "pydoc", "limit": 1}]}})
    probe = resolve_task(stream.evaluation.probes[0]).label
    chunks = [c["label"] for c in stream.stream_chunks()]
    summary = {"trainable_parameters": 1, "train_tokens_per_s": 1.0, "peak_memory_bytes": 1, "optimizer_state_bytes": 0,
               "train_seconds": 1.0, "final_loss": 1.0}
    others = chunks + [resolve_task(t).label for t in stream.validation.specs()]  # scored alike in every record
    chunk_scores = {c: _scored([1, 0]) for c in others}
    base = {"tasks": {probe: _scored(base_bits), **{c: _scored([0, 0]) for c in others}}}
    run = stream.runs()[0]
    for seed, bits in seeds.items():
        for k in range(1, len(chunks) + 1):
            folder = run.folder(tmp_path / "stream", seed) / f"chunk{k}"
            folder.mkdir(parents=True)
            (folder / RESULT_FILE).write_text(json.dumps({"summary": summary, "tasks": {probe: _scored(bits), **chunk_scores}}))
    streamed = collect_stream(stream, tmp_path / "stream", base)["summary"][0]["drift"][probe]

    study = StudyConfig.from_dict(dict(shrink(read_config(ROOT / "configs" / "offline.yaml"), tiny_folder),
                                       seeds=list(seeds)))
    run = study.runs()[0]
    for seed, bits in seeds.items():
        folder = run.folder(tmp_path / "study", seed)
        folder.mkdir(parents=True)
        (folder / RESULT_FILE).write_text(json.dumps({
            "label": run.label, "family": run.family.label, "settings": run.settings, "summary": summary,
            "wall_seconds": 1.0, "eval_seconds": 1.0, "train_config": {}, "tasks": {probe: _scored(bits)}}))
    studied = next(r for r in collect_results(study, tmp_path / "study", base)["summary"] if r["label"] == run.label)[probe]

    changes = [100 * (sum(b) - sum(base_bits)) / len(base_bits) for b in seeds.values()]  # 20, 0, 30 points
    per_item = [statistics.fmean(seeds[s][i] for s in seeds) - base_bits[i] for i in range(len(base_bits))]
    items = 100 * statistics.stdev(per_item) / math.sqrt(len(per_item))
    expected = math.hypot(statistics.stdev(changes) / math.sqrt(len(seeds)), items)
    assert studied["delta"] == streamed["delta"] and studied["delta"]["mean"] == pytest.approx(50 / 3)
    assert noise(studied) == pytest.approx(expected) and noise(streamed) == pytest.approx(expected)
    results = collect_stream(stream, tmp_path / "stream", base)
    assert f"{probe} change" in stream_markdown(results) and f"(±{expected:.1f})" in stream_markdown(results)


def test_within_noise_weighs_the_mean_against_its_noise_else_the_tolerance():
    from smf.stats import within_noise

    assert within_noise({"delta": {"mean": -3.0, "std": 0.0, "n": 1}, "delta_stderr": 2.0}, 1.0)
    assert not within_noise({"delta": {"mean": -4.0, "std": 0.0, "n": 1}, "delta_stderr": 2.0}, 1.0)
    assert within_noise({"delta": {"mean": -4.0, "std": 3.0, "n": 3}, "delta_stderr": 2.0}, 1.0)  # hypot(√3, 2) = 2.6
    assert not within_noise({"delta": {"mean": -1.5, "std": None, "n": 1}, "delta_stderr": None}, 1.0)
    assert within_noise({"delta": {"mean": -0.5, "std": None, "n": 1}, "delta_stderr": None}, 1.0)


def test_a_stream_collected_before_the_noise_mark_keeps_its_recorded_error():
    """Older results.json stored a probe's whole standard error (the items' share over sqrt(seeds));
    it is shown as recorded, never weighed again beside the seed spread."""
    from smf.stats import noise
    from smf.study.stream import NOISE, drift_cell

    cell = {"delta": {"mean": 1.0, "std": 3.0, "n": 3}, "delta_stderr": 2.0}
    assert noise(drift_cell({}, cell)) == 2.0
    assert noise(drift_cell({"noise": NOISE}, cell)) == pytest.approx(math.hypot(3.0 / math.sqrt(3), 2.0))
