"""`smf eval` end to end on a tiny random model folder, and its bad-input errors."""

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from smf.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tokenizer):
    """A saved tiny random Llama with the default model's tokenizer (no downloads)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_eval_writes_metrics_and_records(tiny_folder, tmp_path, capsys):
    out = tmp_path / "result.json"
    rc = main([
        "eval", "--model", str(tiny_folder), "--tasks-file", str(_tasks_yaml(tmp_path)), "--limit", "4",
        "--batch-size", "3", "--out", str(out),
    ])
    assert rc == 0
    result = json.loads(out.read_text())
    tasks = result["tasks"]
    assert set(tasks) == {"medmcqa", "medmcqa_cloze", "triviaqa", "wikitext"}
    for r in tasks.values():
        assert r["n"] == len(r["records"]) and r["n"] <= 4
        assert r["headline"]["value"] is not None
    assert tasks["medmcqa"]["options"]["format"] == "letter"
    assert tasks["medmcqa_cloze"]["options"]["format"] == "cloze"
    for label in ("medmcqa", "medmcqa_cloze"):
        m = tasks[label]["metrics"]
        assert {"acc", "acc_stderr", "acc_ci95", "acc_norm", "acc_tok"} <= set(m)
        assert {"id", "answer", "pred", "correct", "logprobs"} <= set(tasks[label]["records"][0])
    assert {"exact_match", "exact_match_stderr", "substring_match"} <= set(tasks["triviaqa"]["metrics"])
    assert {"word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"} <= set(tasks["wikitext"]["metrics"])
    assert "wrote" in capsys.readouterr().out


def _tasks_yaml(folder: Path) -> Path:
    path = folder / "tasks.yaml"
    path.write_text(
        "tasks:\n"
        f"  - {{name: medmcqa, source: {FIXTURES / 'medmcqa_validation.jsonl'}}}\n"
        f"  - {{name: medmcqa, source: {FIXTURES / 'medmcqa_validation.jsonl'}, format: cloze, as: medmcqa_cloze}}\n"
        f"  - {{name: triviaqa, source: {FIXTURES / 'triviaqa_validation.jsonl'}, max_new_tokens: 4}}\n"
        f"  - {{name: wikitext, source: {FIXTURES / 'wikitext_test.jsonl'}, max_length: 64}}\n"
    )
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _medmcqa_rows() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "medmcqa_validation.jsonl").read_text().splitlines()[:3]]


def _bad_medmcqa(tmp_path, case):
    rows = _medmcqa_rows()
    if case == "missing field":
        del rows[1]["opc"]
    elif case == "wrong cop":
        rows[2]["cop"] = 4
    elif case == "empty file":
        rows = []
    return _write_jsonl(tmp_path / "medmcqa.jsonl", rows)


def _run_expecting_error(capsys, argv) -> str:
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smf: error:"), captured.err
    return lines[0]


@pytest.mark.parametrize(
    "case, expected",
    [("missing field", ["opc"]), ("wrong cop", ["cop"]), ("empty file", ["empty", "no"])],
)
def test_bad_dataset_rows_are_one_line_naming_file_and_row(tiny_folder, tmp_path, capsys, case, expected):
    source = _bad_medmcqa(tmp_path, case)
    out = tmp_path / "result.json"
    task = json.dumps({"name": "medmcqa", "source": str(source)})
    yaml_file = tmp_path / "tasks.yaml"
    yaml_file.write_text(f"tasks:\n  - {task}\n")
    line = _run_expecting_error(capsys, ["eval", "--model", str(tiny_folder), "--tasks-file", str(yaml_file), "--out", str(out)])
    assert "medmcqa.jsonl" in line
    assert any(word in line for word in expected), line
    if case != "empty file":
        assert ("row 2" in line) if case == "missing field" else ("row 3" in line), line
    assert not out.exists()


def test_unknown_task_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "result.json"
    line = _run_expecting_error(capsys, ["eval", "--tasks", "facts,medmcqq", "--out", str(out)])
    assert "medmcqq" in line and "medmcqa" in line
    assert not out.exists()


def test_unknown_option_and_bad_format_are_one_line(tmp_path, capsys):
    yaml_file = tmp_path / "tasks.yaml"
    yaml_file.write_text("tasks:\n  - {name: medmcqa, fromat: cloze}\n")
    line = _run_expecting_error(capsys, ["eval", "--tasks-file", str(yaml_file), "--out", str(tmp_path / "r.json")])
    assert "fromat" in line and "format" in line
    yaml_file.write_text(f"tasks:\n  - {{name: medmcqa, source: {FIXTURES / 'medmcqa_validation.jsonl'}, format: letters}}\n")
    line = _run_expecting_error(capsys, ["eval", "--tasks-file", str(yaml_file), "--out", str(tmp_path / "r.json")])
    assert "letters" in line and "cloze" in line


def test_missing_source_file_is_one_line(tmp_path, capsys):
    line = _run_expecting_error(
        capsys, ["eval", "--tasks-file", str(_one_task(tmp_path, {"name": "triviaqa", "source": str(tmp_path / "nope.jsonl")})),
                 "--out", str(tmp_path / "r.json")],
    )
    assert "nope.jsonl" in line


def _one_task(folder: Path, spec: dict) -> Path:
    path = folder / "tasks.yaml"
    path.write_text(f"tasks:\n  - {json.dumps(spec)}\n")
    return path


@pytest.mark.parametrize("flag", ["--batch-size", "--generate-batch-size"])
def test_batch_sizes_below_one_are_one_line(tmp_path, capsys, flag):
    out = tmp_path / "r.json"
    line = _run_expecting_error(capsys, ["eval", "--tasks", "capitals", flag, "0", "--out", str(out)])
    assert line == f"smf: error: {flag} must be a positive integer, got 0"
    assert not out.exists()
