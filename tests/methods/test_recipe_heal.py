"""The published SMF-on-Qwen study's heal, proved against its own code's outputs (tests/fixtures/recipe/
lr_schedule.json: the learning rate of every update of its Trainer's schedule for T = 1000, 57 and 6, and
its tiny heal run): epochs counted as transformers' Trainer counts them, cosine with warm-up from 0.
Learning rates within 1e-9."""

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import memory_folder, refused_at_load
from smf.errors import SmfError
from smf.memory import MemoryConfig
from smf.methods import TrainConfig
from smf.methods.heal import HealConfig
from smf.train.loop import lr_lambda
from smf.data.batching import document_sequences, step_indices
from smf.data.hub import oasst1_rows
from smf.data.sources import general_texts
from smf.memory import load_retrofitted
from smf.train import train
from smf.train.stages import heal

RECIPE = Path(__file__).resolve().parents[1] / "fixtures" / "recipe"
SCHEDULE = json.loads((RECIPE / "lr_schedule.json").read_text())
OASST1 = RECIPE / "inputs" / "oasst1_train.jsonl"
STUDY_DATA = {"name": "oasst1", "source": str(OASST1), "lang": "en", "role": "assistant", "rank": [0, 1], "min_chars": 50,
              "sample": 50000, "seed": 0}
# the study's heal (lr_schedule.json's training_arguments), with the tiny run's max_length
STUDY_HEAL = {"data": STUDY_DATA, "pack": False, "max_length": 128, "epochs": 2, "lr": 5e-4, "batch_size": 16, "grad_accum": 8,
              "schedule": "cosine", "warmup_steps": 100, "schedule_as": "transformers", "max_grad_norm": 1.0}


def applied_lrs(config: TrainConfig) -> list[float]:
    """The learning rate of each optimizer update, with the scheduler the training loop builds."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([weight], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    out = []
    for _ in range(config.steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("total", [1000, 57, 6])
def test_heal_schedule_is_the_studys(total):
    args = SCHEDULE["training_arguments"]
    config = HealConfig.from_dict({**STUDY_HEAL, "epochs": None, "steps": total, "warmup_steps": 0}).train_config()
    config.warmup_steps = args["warmup_steps"]  # T = 57 and 6 are inside the warm-up: a config refuses that (below)
    assert config.lr == args["learning_rate"] and config.max_grad_norm == args["max_grad_norm"]
    expected = SCHEDULE[f"total_{total}"]["lr_applied_at_update"]
    got = applied_lrs(config)
    assert len(got) == len(expected) and max(abs(a - b) for a, b in zip(got, expected)) < 1e-9


def test_heal_epochs_count_as_the_studys_trainer():
    count = SCHEDULE["tiny_run_step_count"]
    config = HealConfig.from_dict({**STUDY_HEAL, "warmup_steps": 0}).train_config()
    assert config.epoch_steps(count["n_train_rows"]) == count["max_steps"]  # 43 messages, 2 epochs of 16: 6
    assert config.epoch_steps(40) == 6  # ceil(2.5) updates an epoch; smf's own count gives 5
    assert TrainConfig.from_dict({"method": "heal", "epochs": 2, "batch_size": 16}).epoch_steps(40) == 5


def test_a_heal_as_the_study_heals(tmp_path, tokenizer):
    """The study's tiny heal run: 43 messages, one a sequence, 6 updates at the learning rates its Trainer applied."""
    folder = memory_folder(tmp_path / "memory", tokenizer, MemoryConfig(layers=(1,), slots=256, heads=2, topk=4, key_dim=16))
    config = HealConfig.from_dict({**STUDY_HEAL, "warmup_steps": 0}).train_config()
    config.warmup_steps = 100  # longer than the run, as the tiny run was: the heal stage refuses that (below)
    sequences = document_sequences(general_texts(STUDY_DATA), tokenizer, 128, min_tokens=2)
    result = train(load_retrofitted(folder), tokenizer, sequences, config, tmp_path / "heal", model_dir=folder,
                   progress=False, save_model=False)
    lrs = [r["lr"] for r in result.log if "loss" in r]
    expected = SCHEDULE["tiny_run_observed"]["lr_applied_at_update (on_pre_optimizer_step)"]
    assert len(lrs) == len(expected) == 6 and max(abs(a - b) for a, b in zip(lrs, expected)) < 1e-9
    assert result.summary["steps"] == 6
    # 2 epochs, each message once an epoch: steps of 16, 16 and 11 messages (the study's 22 micro-batches of 2 in
    # windows of 8, 8 and 6), never one of a third pass
    assert sum(r["tokens"] for r in result.log if "loss" in r) == 2 * sum(len(s.ids) for s in sequences)


def test_steps_keep_to_their_epoch_as_the_studys_trainer():
    count = SCHEDULE["tiny_run_step_count"]
    n, steps = count["n_train_rows"], count["max_steps"]
    order = [step_indices(n, step, 16, seed=0, whole_epochs=True) for step in range(steps)]
    assert [len(s) for s in order] == [16, 16, 11] * 2
    assert sorted(sum(order[:3], [])) == sorted(sum(order[3:], [])) == list(range(n))
    assert [len(step_indices(n, step, 16, seed=0)) for step in range(steps)] == [16] * 6  # smf's own: epochs back to back


def test_a_warmup_longer_than_the_heal_is_refused_at_load(tmp_path, capsys, monkeypatch, tokenizer):
    with pytest.raises(SmfError, match=r"heal: warmup_steps: a warm-up of 300 steps is longer than the heal's 200 steps"):
        HealConfig.from_dict({"warmup_steps": 300}, "heal")
    with pytest.raises(SmfError, match=r"a warm-up of 100 steps is longer than the heal's 6 steps \(2 epochs of 43 sequences"):
        HealConfig.from_dict(STUDY_HEAL, "heal")  # epochs over a local file: counted at load
    heal_yaml = json.dumps(STUDY_HEAL)
    folder = memory_folder(tmp_path / "memory", tokenizer, MemoryConfig(layers=(1,), slots=256, heads=2, topk=4, key_dim=16))
    with pytest.raises(SmfError, match=r"heal: warmup_steps: a warm-up of 7 steps is longer than the heal's 6 steps"):
        # a config not checked at load (the hub's messages are counted only when the heal starts)
        heal(folder, HealConfig(**{**STUDY_HEAL, "warmup_steps": 7}), tmp_path / "heal", progress=False)
    assert not (tmp_path / "heal").exists()
    refused_at_load(f"methods: {{smf-kl: {{}}}}\nevaluation: {{task: facts}}\nheal: {heal_yaml}\n", tmp_path, capsys, monkeypatch,
                    "heal.warmup_steps: a warm-up of 100 steps is longer than the heal's 6 steps")


def test_smf_heal_as_the_study_heals_from_the_command_line(tmp_path, tokenizer, capsys):
    from smf.cli import main

    folder = memory_folder(tmp_path / "memory", tokenizer, MemoryConfig(layers=(1,), slots=256, heads=2, topk=4, key_dim=16))
    data = f"oasst1:source={OASST1},lang=en,role=assistant,min_chars=50"
    assert main(["heal", "--model", str(folder), "--data", data, "--pack", "false", "--epochs", "1", "--batch-size", "16",
                 "--grad-accum", "8", "--max-length", "32", "--schedule", "cosine", "--warmup-steps", "2",
                 "--schedule-as", "transformers", "--lr", "5e-4", "--out", str(tmp_path / "heal")]) == 0
    n = len(oasst1_rows(OASST1, lang="en", role="assistant", min_chars=50))  # every rank: a list does not fit a flag
    steps = math.ceil(n / 16)
    assert f"healed for {steps} steps" in capsys.readouterr().out
    log = [json.loads(line) for line in (tmp_path / "heal" / "log.jsonl").read_text().splitlines()]
    closed_form = [5e-4 * (s / 2 if s < 2 else 0.5 * (1 + math.cos(math.pi * (s - 2) / (steps - 2)))) for s in range(steps)]
    assert max(abs(r["lr"] - lr) for r, lr in zip([r for r in log if "loss" in r], closed_form, strict=True)) < 1e-12
