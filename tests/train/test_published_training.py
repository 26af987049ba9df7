"""Two training settings of the published study: the un-normalised micro-batch loss and bf16 full finetuning.

The study's SMF stage returns each micro-batch's mean loss and the Trainer does not divide it by the
accumulation steps (recipe fixture e2e_tiny_runs.json, informational: its logged loss is the sum of the
4 micro-batches' means), so the gradient is the sum of the micro-batches' mean-loss gradients
(`micro_batch_loss: own_mean`); smf's default weighs every target token of a step alike. The study's full
finetuning keeps the weights and AdamW's moments in bf16 (`weights: bf16` of method full).
"""

import pytest
import torch

from conftest import tiny_model
from smf.data.batching import collate, encode_examples, step_indices
from smf.data.types import TrainExample
from smf.errors import SmfError
from smf.train import TrainConfig, train

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def examples():
    """Four examples with targets of different lengths (1, 2, 3, 4 words): micro-batch means differ from the step's."""
    return [TrainExample(prompt=f"Question: {WORDS[i]}?\nAnswer:", target=" " + " ".join(WORDS[i + 1 : i + 2 + i])) for i in range(4)]


def step_gradient(tokenizer, tmp_path, monkeypatch, **settings) -> dict[str, torch.Tensor]:
    """The gradient AdamW steps with at the first update of a full finetune of a tiny model."""
    seen = {}
    original = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        if not seen:
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        seen[id(p)] = p.grad.detach().float().clone()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    model = tiny_model(vocab_size=len(tokenizer))
    names = {id(p): n for n, p in model.named_parameters()}
    config = TrainConfig.from_dict({"method": "full", "steps": 1, "batch_size": 4, "grad_accum": 2, "max_length": 64,
                                    "max_grad_norm": None, **settings})
    train(model, tokenizer, examples(), config, tmp_path / "run", save_model=False, progress=False)
    return {names[k]: g for k, g in seen.items()}


def reference_gradients(tokenizer, config: TrainConfig) -> tuple[dict, dict]:
    """(sum over micro-batches of their mean-loss gradients, gradient of the step's token mean), by hand."""
    model = tiny_model(vocab_size=len(tokenizer)).train()
    data = encode_examples(examples(), tokenizer, 64)
    items = [data[i] for i in step_indices(len(data), 0, config.batch_size, config.seed)]
    batches = [collate(items[j : j + 2], tokenizer.pad_token_id) for j in (0, 2)]
    out = []
    for own in (True, False):
        model.zero_grad()
        total = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        for b in batches:
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].float()
            targets = b["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
            (losses / (int((targets != -100).sum()) if own else total)).backward()
        out.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
    return out[0], out[1]


def test_own_mean_sums_the_micro_batches_mean_losses(tokenizer, tmp_path, monkeypatch):
    config = TrainConfig.from_dict({"method": "full", "steps": 1, "batch_size": 4, "grad_accum": 2, "max_length": 64})
    own_ref, step_ref = reference_gradients(tokenizer, config)
    own = step_gradient(tokenizer, tmp_path / "own", monkeypatch, micro_batch_loss="own_mean")
    monkeypatch.undo()
    default = step_gradient(tokenizer, tmp_path / "step", monkeypatch)
    name = "model.layers.0.mlp.down_proj.weight"
    assert (own[name] - own_ref[name]).abs().max() <= 1e-6 * max(1.0, float(own_ref[name].abs().max()))
    assert (default[name] - step_ref[name]).abs().max() <= 1e-6 * max(1.0, float(step_ref[name].abs().max()))
    ratio = own[name].norm() / default[name].norm()
    assert 1.5 < ratio < 2.5  # about grad_accum times the gradient


def test_bf16_full_finetuning_keeps_bf16_weights_and_adam_state(tokenizer, tmp_path, monkeypatch):
    states = []
    original = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        states.append({st["exp_avg"].dtype for st in self.state.values()} | {p.dtype for g in self.param_groups for p in g["params"]})
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    model = tiny_model(vocab_size=len(tokenizer))
    before = {n: p.detach().to(torch.bfloat16) for n, p in model.named_parameters()}
    config = TrainConfig.from_dict({"method": "full", "weights": "bf16", "steps": 2, "batch_size": 4, "max_length": 64, "lr": 1e-7})
    train(model, tokenizer, examples(), config, tmp_path / "run", save_model=False, progress=False)
    assert states and all(s == {torch.bfloat16} for s in states)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    # an update far below a weight's bf16 spacing rounds away: the large weights did not move
    big = {n: p for n, p in model.named_parameters() if p.abs().min() > 1e-2}
    assert big and all(torch.equal(p.detach(), before[n]) for n, p in big.items())


def test_fp32_stays_the_default(tokenizer):
    assert TrainConfig.from_dict({"method": "full"}).options.weights == "fp32"
    assert TrainConfig.from_dict({"method": "smf"}).micro_batch_loss == "step_mean"


@pytest.mark.parametrize("raw, message", [({"method": "full", "weights": "fp16"}, "weights"),
                                          ({"method": "smf", "micro_batch_loss": "sum"}, "micro_batch_loss")])
def test_bad_values_are_refused_at_load(raw, message):
    with pytest.raises(SmfError, match=message):
        TrainConfig.from_dict(raw, where="train")


@pytest.mark.slow
def test_smf_trains_the_study_model_as_the_study_does(tmp_path):
    """The study's layer with its SMF settings through the trainer: each micro-batch masked to its own top-t
    (padding counted, the study's scores), dense AdamW on the values, own-mean micro-batch loss; only value
    rows chosen in some micro-batch move, nothing else does."""
    import json

    from transformers import AutoTokenizer

    from conftest import TOKENIZER
    from recipe_model import RECIPE, study_model
    from smf.selection import BackgroundStats

    model = study_model()
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    texts = json.loads((RECIPE / "medmcqa_texts.json").read_text())["formatted_text_by_id"]
    data = [TrainExample(prompt="", target=t) for t in list(texts.values())[:8]]
    ref = json.loads((RECIPE / "selection.json").read_text())["background"]
    df, counts = torch.zeros(4096, dtype=torch.int64), torch.zeros(4096, dtype=torch.int64)
    for row, n in ref["bg_df"].items():
        df[int(row)] = n
    for row, n in ref["bg_access_counts"].items():
        counts[int(row)] = n
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    chosen = []
    config = TrainConfig.from_dict({"method": "smf", "rule": "tfidf", "top_t": 8, "optimizer": "adamw_masked", "lr": 5e-4,
                                    "select_every": "micro_batch", "count": "padded", "scoring": "published",
                                    "micro_batch_loss": "own_mean", "loss": "text", "steps": 2, "batch_size": 4,
                                    "grad_accum": 2, "max_length": 128})
    result = train(model, tokenizer, data, config, tmp_path / "run", background=BackgroundStats(8, {1: df}, {1: counts}),
                   save_model=False, progress=False)
    changed = {n for n, p in result.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == {"model.layers.1.mlp.memory.values"}
    values = result.model.model.layers[1].mlp.memory.values.detach()
    moved = (values != before["model.layers.1.mlp.memory.values"]).any(1).nonzero().flatten()
    assert 0 < len(moved) <= 2 * 2 * 8  # at most t rows per micro-batch
    assert all(r["rows_selected"] <= 2 * 8 for r in result.log if "rows_selected" in r)
