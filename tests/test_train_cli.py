"""`smf train`, `smf background`, `smf heal` and training data sources, bad input included."""

import json

import pytest

from conftest import tiny_model
from smf.cli import main
from smf.errors import SmfError
from smf.sources import general_texts, parse_spec, training_examples


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny plain model folder and a tiny retrofitted one (no background yet)."""
    from smf.memory import MemoryConfig, retrofit, save_retrofitted
    from smf.models import load_tokenizer

    root = tmp_path_factory.mktemp("models")
    tokenizer = load_tokenizer()
    plain = root / "plain"
    model = tiny_model(vocab_size=len(tokenizer))
    model.save_pretrained(plain)
    tokenizer.save_pretrained(plain)
    retro = save_retrofitted(retrofit(tiny_model(vocab_size=len(tokenizer)), MemoryConfig(layers=(1, 3), slots=256, heads=2, topk=4, key_dim=16)), tokenizer, root / "retro")
    return plain, retro


def err_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smf: error: "), lines
    return lines[0]


def test_background_then_smf_train_then_resume(folders, tmp_path, capsys):
    _, retro = folders
    assert main(["background", "--model", str(retro), "--batches", "3", "--batch-size", "2", "--max-length", "32"]) == 0
    assert "background statistics of 3 batches" in capsys.readouterr().out
    assert main(["info", str(retro)]) == 0
    assert "background statistics: 3 batches" in capsys.readouterr().out
    out = tmp_path / "run"
    argv = ["train", "--model", str(retro), "--method", "smf", "--selection", "kl", "--top-t", "20",
            "--data", "facts:n_facts=20,n_control=8", "--steps", "3", "--batch-size", "4", "--out", str(out)]
    assert main(argv) == 0
    assert (out / "model" / "smf_memory.json").is_file() and (out / "model" / "background.safetensors").is_file()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["rows_selected"] > 0 for r in log)
    capsys.readouterr()
    assert main(argv) == 2
    assert "already holds a run; pass --resume" in err_line(capsys)
    assert main([*argv, "--resume"]) == 2
    assert "finished run" in err_line(capsys)


def test_heal(folders, tmp_path, capsys):
    _, retro = folders
    assert main(["heal", "--model", str(retro), "--steps", "2", "--batch-size", "2", "--max-length", "32", "--out", str(tmp_path / "h")]) == 0
    assert "run smf background on it" in capsys.readouterr().out
    assert (tmp_path / "h" / "model" / "smf_memory.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "adapters"], "unknown method 'adapters'"),
        (["--selection", "bm25"], "unknown selection rule 'bm25'"),
        (["--top-t", "0"], "top-t must be a positive"),
        (["--data", "nonsense"], "unknown training data 'nonsense'"),
        (["--data", "missing.jsonl"], "missing.jsonl: file not found"),
        (["--data", "facts:n_factz=3"], "facts options"),
    ],
)
def test_train_bad_input(folders, tmp_path, capsys, args, message):
    _, retro = folders
    out = tmp_path / "never"
    argv = ["train", "--model", str(retro), "--data", "facts", "--steps", "1", "--out", str(out), *args]
    assert main(argv) == 2
    assert message in err_line(capsys)
    assert not out.exists()


def test_smf_needs_memory_layers_and_background(folders, tmp_path, capsys):
    plain, _ = folders
    from smf.memory import MemoryConfig, retrofit, save_retrofitted
    from smf.models import load_tokenizer

    assert main(["train", "--model", str(plain), "--method", "smf", "--data", "facts", "--steps", "1", "--out", str(tmp_path / "a")]) == 2
    assert "needs a model with memory layers; run smf retrofit" in err_line(capsys)
    tokenizer = load_tokenizer()
    nobg = save_retrofitted(retrofit(tiny_model(vocab_size=len(tokenizer)), MemoryConfig(layers=(1,), slots=64, heads=1, topk=4, key_dim=8)), tokenizer, tmp_path / "nobg")
    assert main(["train", "--model", str(nobg), "--method", "smf", "--data", "facts", "--steps", "1", "--out", str(tmp_path / "b")]) == 2
    assert "no background statistics" in err_line(capsys)
    assert main(["background", "--model", str(plain)]) == 2
    assert "has no memory layers" in err_line(capsys)


def test_train_config_file_and_unknown_key(folders, tmp_path, capsys):
    plain, _ = folders
    config = tmp_path / "t.yaml"
    config.write_text("method: lora\nstepz: 3\n")
    assert main(["train", "--model", str(plain), "--config", str(config), "--data", "facts", "--out", str(tmp_path / "o")]) == 2
    assert "unknown key(s) stepz" in err_line(capsys)


def test_sources_from_files(tmp_path):
    rows = tmp_path / "qa.jsonl"
    rows.write_text('{"prompt": "Q: x?\\nA:", "target": " y"}\n{"text": "a plain statement."}\n')
    assert [(e.prompt, e.target) for e in training_examples(str(rows))] == [("Q: x?\nA:", " y"), ("", "a plain statement.")]
    lines = tmp_path / "facts.txt"
    lines.write_text("one fact.\n\nanother fact.\n")
    assert [e.target for e in training_examples(str(lines))] == ["one fact.", "another fact."]
    text = tmp_path / "doc.txt"
    text.write_text("some general text")
    assert general_texts(str(text)) == ["some general text"]
    assert len(general_texts("pydoc")) > 40


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "the file is empty"),
        ('{"prompt": "x"}\n', "row 1 needs a string 'target'"),
        ('{"target": "ok"}\nnot json\n', "line 2 is not valid JSON"),
    ],
)
def test_bad_source_files(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(SmfError, match=message):
        training_examples(str(path))


def test_parse_spec():
    assert parse_spec("facts:n_facts=20,seed=3") == {"name": "facts", "n_facts": 20, "seed": 3}
    with pytest.raises(SmfError, match="not key=value"):
        parse_spec("facts:n_facts")


def test_hub_training_sources_read_local_files():
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures"
    medmcqa = training_examples({"name": "medmcqa", "source": str(fixtures / "medmcqa_validation.jsonl"), "split": "validation"})
    assert medmcqa[0].prompt.startswith("Question: ") and medmcqa[0].prompt.endswith("Answer:")
    assert medmcqa[0].target[:3] in (" A.", " B.", " C.", " D.")
    facts = training_examples({"name": "triviaqa-facts", "source": str(fixtures / "trivia_qa_rc_nocontext_validation.jsonl"), "split": "validation", "limit": 3})
    assert len(facts) == 3 and all(e.prompt == "" and "? " in e.target for e in facts)
