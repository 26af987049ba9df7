"""`smf train`, `smf background`, `smf heal` and training data sources, bad input included."""

import json

import pytest
import torch

from conftest import tiny_model
from smf.cli import main
from smf.errors import SmfError
from smf.data.sources import general_texts, source_from_text, training_examples


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer):
    """A tiny plain model folder and a tiny retrofitted one (no background yet)."""
    from smf.memory import MemoryConfig, retrofit, save_retrofitted

    root = tmp_path_factory.mktemp("models")
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


@pytest.mark.slow
def test_background_then_smf_train_then_resume(folders, tmp_path, capsys):
    _, retro = folders
    assert main(["background", "--model", str(retro), "--batches", "3", "--batch-size", "2", "--max-length", "32"]) == 0
    assert "background statistics of 3 batches" in capsys.readouterr().out
    assert main(["info", str(retro)]) == 0
    assert "background statistics: 3 batches" in capsys.readouterr().out
    out = tmp_path / "run"
    argv = ["train", "--model", str(retro), "--method", "smf", "--rule", "kl", "--top-t", "20",
            "--data", "facts:n_facts=20,n_control=8", "--steps", "3", "--batch-size", "4", "--out", str(out)]
    assert main(argv) == 0
    # a compact run: the changed rows over the retrofitted folder, no model copy
    assert (out / "model" / "smf_delta.json").is_file() and not (out / "model" / "config.json").exists()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["rows_selected"] > 0 for r in log)
    capsys.readouterr()
    assert main(argv) == 2
    assert "already holds a run; pass --resume" in err_line(capsys)
    assert main([*argv, "--resume"]) == 2
    assert "finished run" in err_line(capsys)
    # a run folder stands for the model it saved, wherever smf takes a model
    from smf.models import resolve_model

    assert resolve_model(out) == out / "model"
    assert main(["info", str(out / "model")]) == 0 and main(["ask", "--model", str(out), "--max-new-tokens", "2", "hi"]) == 0


@pytest.mark.slow
def test_heal(folders, tmp_path, capsys):
    _, retro = folders
    assert main(["heal", "--model", str(retro), "--steps", "2", "--batch-size", "2", "--max-length", "32", "--out", str(tmp_path / "h")]) == 0
    assert "run smf background on it" in capsys.readouterr().out
    # every memory parameter trained, no base weight touched
    from smf.memory import load_retrofitted

    before, after = load_retrofitted(retro).state_dict(), load_retrofitted(tmp_path / "h" / "model").state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    memory = {n for n in before if ".mlp.memory." in n}
    assert changed == memory


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "adapters"], "unknown method 'adapters'"),
        (["--rule", "bm25"], "unknown selection rule 'bm25'"),
        (["--top-t", "0"], "top_t must be a positive"),
        (["--rank", "4"], "'rank' is an option of lora, not of smf"),
        (["--selection", "kl"], "--selection is now --rule"),
        (["--lora-r", "4"], "--lora-r is now --rank"),
        (["--data", "nonsense"], "unknown training data 'nonsense'"),
        (["--data", "missing.jsonl"], "missing.jsonl: file not found"),
        (["--data", "facts:n_factz=3"], "facts has no option 'n_factz'; did you mean 'n_facts'?"),
    ],
)
def test_train_bad_input(folders, tmp_path, capsys, args, message):
    _, retro = folders
    out = tmp_path / "never"
    argv = ["train", "--model", str(retro), "--data", "facts", "--steps", "1", "--out", str(out), *args]
    assert main(argv) == 2
    assert message in err_line(capsys)
    assert not out.exists()


def test_smf_needs_memory_layers_and_background(folders, tokenizer, tmp_path, capsys):
    plain, _ = folders
    from smf.memory import MemoryConfig, retrofit, save_retrofitted

    assert main(["train", "--model", str(plain), "--method", "smf", "--data", "facts", "--steps", "1", "--out", str(tmp_path / "a")]) == 2
    assert "needs a model with memory layers; run smf retrofit" in err_line(capsys)
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
    assert "unknown key 'stepz'; did you mean 'steps'?" in err_line(capsys)
    config.write_text("method: lora\nlora_r: 4\n")
    assert main(["train", "--model", str(plain), "--config", str(config), "--data", "facts", "--out", str(tmp_path / "o")]) == 2
    assert "lora_r: this key is now 'rank'" in err_line(capsys)


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
        ("", "the file has no rows"),
        ('{"prompt": "x"}\n', "row 1 needs a string 'target'"),
        ('{"target": "ok"}\nnot json\n', "line 2: not valid JSON"),
    ],
)
def test_bad_source_files(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(SmfError, match=message):
        training_examples(str(path))


def test_source_from_text():
    assert source_from_text("facts:n_facts=20,seed=3") == {"name": "facts", "n_facts": 20, "seed": 3}
    with pytest.raises(SmfError, match="not key=value"):
        source_from_text("facts:n_facts")


def test_hub_training_sources_read_local_files():
    from pathlib import Path

    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    medmcqa = training_examples({"name": "medmcqa", "source": str(fixtures / "medmcqa_validation.jsonl"), "split": "validation"})
    assert medmcqa[0].prompt.startswith("Question: ") and medmcqa[0].prompt.endswith("Answer:")
    assert medmcqa[0].target[:3] in (" A.", " B.", " C.", " D.")
    facts = training_examples({"name": "triviaqa-facts", "source": str(fixtures / "trivia_qa_rc_nocontext_validation.jsonl"), "split": "validation", "limit": 3})
    assert len(facts) == 3 and all(e.prompt == "" and "? " in e.target for e in facts)


@pytest.mark.parametrize("command", ["train", "background", "heal", "retrofit", "eval", "compare", "info"])
def test_every_flag_is_documented(command):
    """Each flag of each command has a help text (old flags, hidden, answer with their new name)."""
    import argparse

    from smf.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    assert flags or command == "info"
    undocumented = [a.option_strings[0] for a in flags if not a.help or (a.help == argparse.SUPPRESS and not a.dest.startswith("renamed_"))]
    assert undocumented == []


def test_train_flags_cover_every_setting():
    import argparse

    from smf.cli import build_parser
    from smf.config import field_names
    from smf.methods import METHODS, TrainConfig

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    dests = {a.dest for a in sub._actions}
    settings = set(TrainConfig.shared_names()) | {n for cls in METHODS.values() for n in field_names(cls.Options)}
    assert settings <= dests


def test_background_and_heal_share_the_study_defaults(monkeypatch, folders, tmp_path):
    """The commands pass only what the user set; the rest comes from the same dataclasses a study uses."""
    from smf.methods.heal import HealConfig
    from smf.selection import BackgroundConfig
    from smf.study.config import StudyConfig

    seen = {}
    monkeypatch.setattr("smf.cli.train.background_statistics", lambda folder, config, **k: seen.setdefault("bg", config) and 1 / 0)
    monkeypatch.setattr("smf.cli.train.heal", lambda folder, config, out, **k: seen.setdefault("heal", config) and 1 / 0)
    _, retro = folders
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "background", "--model", str(retro)])  # --debug: the stub's error itself, not its one line
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "heal", "--model", str(retro), "--out", str(tmp_path / "h")])
    assert seen["bg"] == BackgroundConfig() == StudyConfig().background
    assert seen["heal"] == HealConfig() and seen["heal"].steps == 200


@pytest.mark.slow
def test_background_reads_each_document_from_its_start_unless_packed(folders, tmp_path, capsys):
    """--pack false: each document is one sequence from its first token (as a chat is read when the model is
    used): six short documents fill 3 batches of 2, and the counts hold exactly their tokens' reads (heads ×
    top-k per token and layer); packed into 32-token sequences they make one, and the one line says so."""
    import shutil

    from smf.models import load_tokenizer
    from smf.selection import BackgroundStats

    retro = shutil.copytree(folders[1], tmp_path / "retro")
    texts = [f"document number {k} is short" for k in range(6)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    argv = ["background", "--model", str(retro), "--data", str(tmp_path / "docs.jsonl"), "--batches", "3",
            "--batch-size", "2", "--max-length", "32", "--pack"]
    assert main([*argv, "false"]) == 0
    tokens = sum(len(load_tokenizer(retro)(t).input_ids) for t in texts)
    stats = BackgroundStats.load(retro)
    assert stats.batches == 3 and all(int(c.sum()) == tokens * 2 * 4 for c in stats.counts.values())
    capsys.readouterr()
    assert main([*argv, "true"]) == 2
    assert "background data gives 1 sequences of 32 tokens; 3 batches of 2 need 6" in err_line(capsys)
