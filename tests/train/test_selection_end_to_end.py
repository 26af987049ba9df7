"""Selection end to end: the rows the optimizer updates each step are the top-t of the step's
own memory reads under the rule's formula, computed here independently from the recorded
reads and the saved background statistics (a trainer that skips the selector, ranks by
the wrong formula, or settles ties at the t-th place other than by row index, fails)."""

import math

import pytest
import torch

from smf.memory import load_retrofitted, memory_layers
from smf.methods.smf import SmfMethod
from smf.optim import SparseRowOptimizer
from smf.selection import BackgroundStats
from smf.train import TrainConfig, train
from conftest import chosen_rows
from test_train import examples, smf_folder  # noqa: F401  (a fixture)


def expected_rows(rule: str, reads: torch.Tensor, background: BackgroundStats, layer: int, t: int) -> set:
    """The top-t rows by score; equal scores (to 12 digits) go to the lower row."""
    rows, counts = torch.unique(reads, return_counts=True)
    p = counts.double() / counts.sum()
    if rule == "tfidf":
        df = background.df[layer][rows].double()
        score = p * (math.log(background.batches + 1) - torch.log(df + 1))
    else:  # kl
        q = background.counts[layer].double() + 1
        score = p * (p.log() - (q[rows] / q.sum()).log())
    order = sorted(range(len(rows)), key=lambda j: (-float(f"{float(score[j]):.12e}"), int(rows[j])))
    return {int(rows[j]) for j in order[:t]}


@pytest.mark.parametrize("rule", ["tfidf", "kl"])
def test_the_optimizer_gets_the_top_t_rows_of_each_step(rule, smf_folder, tokenizer, tmp_path, monkeypatch):  # noqa: F811
    t = 6
    reads_per_step: list[dict] = []
    current: dict = {}
    chosen: list[dict] = []
    original_after, original_set = SmfMethod.after_forward, SparseRowOptimizer.set_rows

    def after_forward(self, model):
        for i, memory in self.memories.items():
            current.setdefault(i, []).append(memory.last_rows.clone())
        original_after(self, model)

    def set_rows(self, rows, valid=None):
        reads_per_step.append({i: torch.cat(r).flatten() for i, r in current.items()})
        current.clear()
        chosen.append({"rows": list(chosen_rows(rows, valid).values())})
        original_set(self, rows, valid)

    monkeypatch.setattr(SmfMethod, "after_forward", after_forward)
    monkeypatch.setattr(SparseRowOptimizer, "set_rows", set_rows)
    model = load_retrofitted(smf_folder)
    layers = list(memory_layers(model))
    config = TrainConfig.from_dict({"method": "smf", "rule": rule, "top_t": t, "lr": 0.5, "steps": 8, "batch_size": 4,
                                    "grad_accum": 2, "max_length": 48})
    values = {i: m.values.detach().clone() for i, m in memory_layers(model).items()}
    result = train(model, tokenizer, examples(), config, tmp_path / "run", model_dir=smf_folder, progress=False, save_model=False)
    # the summary counts the rows trained (the union of the selected rows), beside the table size
    union = {layer: set().union(*(set(p["rows"][k].tolist()) for p in chosen)) for k, layer in enumerate(layers)}
    changed = sum(int((m.values.detach().cpu() != values[i]).any(-1).sum()) for i, m in memory_layers(result.model).items())
    assert result.summary["rows_trained"] == sum(len(u) for u in union.values()) >= changed > 0
    dim = next(iter(memory_layers(result.model).values())).value_dim
    assert result.summary["parameters_trained"] == result.summary["rows_trained"] * dim
    assert result.summary["table_parameters"] == sum(v.numel() for v in values.values())
    background = BackgroundStats.load(smf_folder)
    for reads, picked in zip(reads_per_step, chosen):
        for layer, rows in zip(layers, picked["rows"]):
            assert set(rows.tolist()) == expected_rows(rule, reads[layer], background, layer, t)
    assert len(reads_per_step) == 8
