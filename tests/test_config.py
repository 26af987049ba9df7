"""Configs: `base:` chains in YAML files, typed choices, and where each default comes from."""

from __future__ import annotations

import pytest

from smf.cli import build_parser, main
from smf.config import merge, read_config
from smf.errors import SmfError
from smf.memory.config import MemoryConfig, depth_layers
from smf.methods import TrainConfig
from smf.study.config import StudyConfig


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_merge_is_deep_for_mappings_and_replaces_the_rest():
    base = {"memory": {"slots": 256, "heads": 2}, "seeds": [0, 1], "name": "a"}
    assert merge(base, {"memory": {"slots": 64}, "seeds": [2]}) == {"memory": {"slots": 64, "heads": 2}, "seeds": [2], "name": "a"}
    assert base["memory"] == {"slots": 256, "heads": 2}  # the base is not changed


def test_base_chain_merges_each_file_over_its_base(tmp_path):
    write(tmp_path / "common" / "root.yaml", "memory: {slots: 256, heads: 2}\ntrain: {steps: 40, batch_size: 16}\nname: root\n")
    write(tmp_path / "common" / "mid.yaml", "base: root.yaml\ntrain: {steps: 12}\n")  # relative to its own folder
    leaf = write(tmp_path / "study" / "config.yaml", "base: ../common/mid.yaml\nmemory: {heads: 4}\nname: leaf\n")
    assert read_config(leaf) == {"memory": {"slots": 256, "heads": 4}, "train": {"steps": 12, "batch_size": 16}, "name": "leaf"}


def test_study_load_follows_base(tmp_path):
    write(tmp_path / "base.yaml", "memory: {layers: [1], slots: 256, heads: 2, topk: 4, key_dim: 16}\n"
                                  "evaluation: {task: facts}\nmethods: {smf-tfidf: {}}\n")
    study = StudyConfig.load(write(tmp_path / "s.yaml", "base: base.yaml\nmemory: {slots: 64}\nmethods: {lora: {}}\n"))
    assert study.memory.slots == 64 and study.memory.layers == (1,) and study.memory.heads == 2
    assert list(study.methods) == ["smf-tfidf", "lora"]  # methods is a mapping: entries merge


@pytest.mark.parametrize("files, message", [
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "chain comes back to itself"),
    ({"a.yaml": "base: a.yaml\n"}, "chain comes back to itself"),
    ({"a.yaml": "base: nothere.yaml\n"}, "base: " ),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "- 1\n- 2\n"}, "expected a mapping"),
    ({"a.yaml": "base: [b.yaml]\n"}, "give the path of the config this one extends"),
])
def test_bad_base_is_refused_in_one_line(tmp_path, files, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(SmfError, match=message) as e:
        read_config(tmp_path / "a.yaml")
    assert "\n" not in str(e.value)


def test_missing_base_names_the_file_that_asks_for_it(tmp_path):
    write(tmp_path / "a.yaml", "base: nothere.yaml\n")
    with pytest.raises(SmfError, match=r"a\.yaml: base: .*nothere\.yaml not found"):
        read_config(tmp_path / "a.yaml")


def test_a_bad_choice_gets_did_you_mean_like_a_bad_key():
    with pytest.raises(SmfError, match=r"optimizer: unknown choice 'adamm'; choose one of .*did you mean 'adam'\?"):
        TrainConfig.from_dict({"optimizer": "adamm"})
    with pytest.raises(SmfError, match="mode: unknown choice 'sideways'"):
        MemoryConfig.from_dict({"mode": "sideways"})


def test_a_bad_choice_on_the_command_line_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["train", "--model", "default", "--data", "facts", "--optimizer", "adamm", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert "optimizer: unknown choice 'adamm'" in err and "did you mean" in err


def test_learn_bad_choice_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "f.txt").write_text("Zorvex was found in 1901.\n")
    code = main(["learn", "--data", str(tmp_path / "f.txt"), "--out", str(tmp_path / "o"), "--protect", "traned"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "protect: unknown choice 'traned'" in err and "did you mean 'trained'?" in err


def help_of(command: str) -> str:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return " ".join(sub.choices[command].format_help().split())


def test_learn_help_names_where_each_default_comes_from():
    text = help_of("learn")
    assert "studies/learn-check" in text and "studies/sweep" in text and "studies/offline" in text
    for name in ("--top-t", "--lr", "--epochs", "--slots", "--optimizer", "--background"):
        assert name in text
    # the preset's values are shown as smf learn's defaults, not TrainConfig's
    assert "(default: 100000.0, smf learn's preset" in text


def test_train_help_names_where_each_default_comes_from():
    text = help_of("train")
    assert "studies/sweep: t = 300" in text
    assert "{adam,sgd,rowwise_adagrad,adamw_masked}" in text  # a choice's flag lists its choices


def test_one_default_geometry_at_the_studied_depth():
    assert depth_layers(30) == (8, 14, 20)
    config = MemoryConfig()
    assert config.layers is None and config.slots == 65536
    assert config.at_depth(30).layers == (8, 14, 20)
    assert MemoryConfig(layers=(1, 2)).at_depth(30).layers == (1, 2)  # explicit layers stay


def test_smf_train_config_follows_base(tmp_path):
    from smf.cli.train import train_settings

    write(tmp_path / "common.yaml", "data: facts\nsteps: 3\nbatch_size: 4\n")
    child = write(tmp_path / "run.yaml", "base: common.yaml\nlr: 0.5\n")
    data, config = train_settings(build_parser().parse_args(["train", "--model", "m", "--config", str(child), "--out", "o"]))
    assert data == "facts" and (config.steps, config.batch_size, config.lr) == (3, 4, 0.5)


def test_learn_config_nests_the_configs_under_one_preset():
    from smf.methods.smf import SmfOptions
    from smf.selection import BackgroundConfig
    from smf.use.learn import LEARN_PRESET, LearnConfig
    from smf.use.learn.config import METHOD_PRESETS

    config = LearnConfig()
    preset = LEARN_PRESET["train"]
    assert (config.train.options.optimizer, config.train.lr, config.train.epochs) == (preset["optimizer"], preset["lr"], preset["epochs"])
    assert config.train.options.top_t == preset["top_t"]  # smf learn's preset (smf train's default is SmfOptions().top_t)
    assert config.memory == MemoryConfig()
    assert config.background == BackgroundConfig.from_dict(LEARN_PRESET["background"])
    flat = LearnConfig.from_dict({"top_t": 100, "slots": 4096, "seed": 2, "background": "wikitext", "steps": 5})
    assert flat.train.options.top_t == 100 and flat.memory.slots == 4096 and flat.memory.seed == flat.train.seed == 2
    assert flat.background.data == "wikitext" and flat.background.batches == 16
    assert flat.train.steps == 5 and flat.train.epochs is None  # steps given: they decide
    nested = LearnConfig.from_dict({"train": {"lr": 1.0, "optimizer": "adam"}, "memory": {"slots": 1024}})
    assert nested.train.lr == 1.0 and nested.train.epochs == preset["epochs"] and nested.memory.slots == 1024
    with pytest.raises(SmfError, match="strictly sparse"):
        LearnConfig.from_dict({"optimizer": "adamw_masked"})
    lora = LearnConfig.from_dict({"method": "lora", "seed": 3})  # the same sitting through LoRA: its own preset
    assert (lora.train.method, lora.train.lr, lora.train.epochs) == ("lora", METHOD_PRESETS["lora"]["lr"], preset["epochs"])
    assert lora.train.seed == 3 and LearnConfig.from_dict({"method": "full"}).train.lr == METHOD_PRESETS["full"]["lr"]
    with pytest.raises(SmfError, match="smf learn teaches with smf, lora, full, not 'heal'"):
        LearnConfig.from_dict({"train": {"method": "heal"}})
    with pytest.raises(SmfError, match="unknown key 'slotz'; did you mean 'slots'"):
        LearnConfig.from_dict({"memory": {"slotz": 4}})
