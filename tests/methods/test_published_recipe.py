"""What the published study's recipe needs: a learnable output scale, the dense-masked AdamW
arm (+S trains the scale), whole-text loss and epochs."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import memory_folder, tiny_model
from smf.errors import SmfError
from smf.memory import MemoryConfig, load_retrofitted, memory_layers, retrofit, save_retrofitted
from smf.train import TrainConfig, train
from test_train import WORDS, examples

SCALED = MemoryConfig(layers=(1, 3), slots=256, heads=2, topk=4, key_dim=16, value_init="normal", scale=0.01)


@pytest.fixture(scope="module")
def scaled_folder(tmp_path_factory, tokenizer):
    """Read by the tests, never changed (training writes its runs elsewhere)."""
    return memory_folder(tmp_path_factory.mktemp("recipe") / "scaled", tokenizer, SCALED, " ".join(WORDS * 20))


def test_the_scale_multiplies_the_memory_and_survives_save_and_transformers(scaled_folder, tokenizer):
    model = load_retrofitted(scaled_folder)
    ids = tokenizer("alpha beta gamma", return_tensors="pt")
    memories = memory_layers(model)
    assert all(m.scale is not None and m.scale.item() == pytest.approx(0.01) for m in memories.values())
    with torch.no_grad():
        before = model(**ids).logits
        for m in memories.values():
            m.scale.fill_(0.0)
        plain = model(**ids).logits
        for m in memories.values():
            m.scale.fill_(0.01)
    assert not torch.allclose(before, plain, atol=1e-6)  # normal values: the memory contributes at once
    theirs = AutoModelForCausalLM.from_pretrained(scaled_folder, trust_remote_code=True).eval()
    with torch.no_grad():
        assert torch.allclose(theirs(**ids).logits, before, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("train_scale", [False, True])
def test_dense_masked_adamw_arm(scaled_folder, tokenizer, tmp_path, train_scale):
    model = load_retrofitted(scaled_folder)
    values = {i: m.values.detach().clone() for i, m in memory_layers(model).items()}
    scales = {i: m.scale.detach().clone() for i, m in memory_layers(model).items()}
    config = TrainConfig.from_dict({"method": "smf", "rule": "kl", "top_t": 6, "optimizer": "adamw_masked", "lr": 1e-2,
                                    "train_scale": train_scale, "steps": 5, "batch_size": 4, "max_length": 48})
    result = train(model, tokenizer, examples(), config, tmp_path / "run", model_dir=scaled_folder, progress=False, save_model=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if "loss" in line]
    assert all(0 < r["rows_selected"] <= 12 for r in log)
    for i, m in memory_layers(result.model).items():
        changed = (m.values.detach() != values[i]).any(-1).sum().item()
        # more rows than one step selects: Adam's moments keep moving earlier rows (not strictly sparse)
        assert 6 < changed <= 5 * 6
        assert (m.scale.detach() != scales[i]).item() == train_scale
    assert result.summary["optimizer_state_bytes"] >= 2 * 4 * sum(v.numel() for v in values.values())  # dense moments


def test_train_scale_needs_the_dense_arm_and_a_scale(tmp_path, tokenizer):
    with pytest.raises(SmfError, match="train_scale needs optimizer adamw_masked"):
        TrainConfig.from_dict({"method": "smf", "train_scale": True})
    plain = save_retrofitted(retrofit(tiny_model(vocab_size=len(tokenizer)), MemoryConfig(layers=(1,), slots=256, heads=2, topk=4, key_dim=16)),
                             tokenizer, tmp_path / "plain")
    config = TrainConfig.from_dict({"method": "smf", "rule": "random", "optimizer": "adamw_masked", "train_scale": True, "steps": 1})
    with pytest.raises(SmfError, match="has no output scale"):
        train(load_retrofitted(plain), tokenizer, examples(), config, tmp_path / "run", model_dir=plain, progress=False)


@pytest.mark.slow
def test_whole_text_loss_and_epochs(tokenizer, tmp_path):
    model = tiny_model(vocab_size=len(tokenizer))
    common = {"method": "full", "lr": 1e-3, "batch_size": 4, "max_length": 64}
    answer = train(model, tokenizer, examples(8), TrainConfig.from_dict({**common, "steps": 1}), tmp_path / "a", progress=False, save_model=False)
    whole = train(tiny_model(vocab_size=len(tokenizer)), tokenizer, examples(8), TrainConfig.from_dict({**common, "steps": 1, "loss": "text"}),
                  tmp_path / "b", progress=False, save_model=False)
    assert whole.log[0]["target_tokens"] > 2 * answer.log[0]["target_tokens"]  # the prompt's tokens count too
    epochs = train(tiny_model(vocab_size=len(tokenizer)), tokenizer, examples(10), TrainConfig.from_dict({**common, "epochs": 2.5}),
                   tmp_path / "c", progress=False, save_model=False)
    assert epochs.summary["steps"] == 7  # ceil(2.5 * 10 / 4)
    with pytest.raises(SmfError, match="loss: unknown choice"):
        TrainConfig.from_dict({"loss": "all"})


@pytest.mark.parametrize("optimizer", ["adam", "adamw_masked"])
def test_selection_per_micro_batch(scaled_folder, tokenizer, tmp_path, monkeypatch, optimizer):
    """select_every: micro_batch masks each micro-batch's gradient to its own top-t; the step
    trains the union (at most grad_accum × t rows per layer), and nothing outside it moves."""
    from smf.methods.smf import SmfMethod

    choices = []
    original = SmfMethod.after_forward

    def after_forward(self, model):
        original(self, model)
        choices.append({i: c[-1].clone() for i, c in self._chosen.items()})

    monkeypatch.setattr(SmfMethod, "after_forward", after_forward)
    model = load_retrofitted(scaled_folder)
    values = {i: m.values.detach().clone() for i, m in memory_layers(model).items()}
    config = TrainConfig.from_dict({"method": "smf", "rule": "tfidf", "top_t": 3, "optimizer": optimizer, "lr": 1e-2,
                                    "select_every": "micro_batch", "steps": 1, "batch_size": 4, "grad_accum": 2, "max_length": 48})
    train(model, tokenizer, examples(), config, tmp_path / "run", model_dir=scaled_folder, progress=False, save_model=False)
    assert len(choices) == 2
    for i, memory in memory_layers(model).items():
        union = set(choices[0][i].tolist()) | set(choices[1][i].tolist())
        assert all(len(c[i]) <= 3 for c in choices) and len(union) <= 6
        changed = set((memory.values.detach() != values[i]).any(-1).nonzero().flatten().tolist())
        assert changed and changed <= union
