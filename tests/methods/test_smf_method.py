"""The SMF method's own bookkeeping, one piece at a time on a tiny model: which positions it
counts, the optimizer it builds, what a checkpoint keeps, and recording across a save.
(Gaps mutmut found: each test kills a mutant that survived the rest of the suite.)"""

import pytest
import torch

from conftest import tiny_model
from smf.memory import MemoryConfig, memory_layers, retrofit
from smf.methods import make_method
from smf.train import TrainConfig

MEMORY = MemoryConfig(layers=[1, 2], slots=1024, heads=2, topk=4, key_dim=16)


def method_and_model(**settings):
    model = retrofit(tiny_model(), MEMORY)
    method = make_method(TrainConfig.from_dict({"method": "smf", "rule": "tf", "top_t": 16, "batch_size": 2, **settings}))
    return method, method.prepare(model, None)


def batch():
    ids = torch.randint(3, 96, (2, 10))
    labels = torch.full_like(ids, -100)
    labels[0, 7:] = ids[0, 7:]  # 3 target tokens, predicted from positions 6, 7, 8
    labels[1, 9:] = ids[1, 9:]  # 1 target token, predicted from position 8
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


@pytest.mark.parametrize("count, positions", [("target", 3 + 1), ("all", 2 * 10)])
def test_count_target_counts_only_the_positions_that_predict_a_target(count, positions):
    method, model = method_and_model(count=count)
    b = batch()
    method.before_forward(model, b)
    model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    method.after_forward(model)
    per_token = MEMORY.heads * MEMORY.topk
    for i in MEMORY.layers:
        assert int(method._reads[i].sum()) == positions * per_token
    if count == "target":  # the reads are exactly those of positions (0, 6..8) and (1, 8)
        memory = memory_layers(model)[1]
        rows, _ = memory._read
        expected = torch.bincount(torch.cat([rows[0, 6:9].flatten(), rows[1, 8]]), minlength=MEMORY.slots)
        assert torch.equal(method._reads[1], expected)
        assert all(m.record_mask is None for m in memory_layers(model).values())  # only for that micro-batch


@pytest.mark.parametrize("optimizer", ["sgd", "rowwise_adagrad", "adam"])
def test_the_optimizer_gets_the_clipping_norm(optimizer):
    method, model = method_and_model(optimizer=optimizer, max_grad_norm=0.25, lr=0.5)
    opt = method.make_optimizer(model)
    assert [g["max_grad_norm"] for g in opt.param_groups] == [0.25]
    assert [g["lr"] for g in opt.param_groups] == [0.5]


def test_a_checkpoint_keeps_the_rows_ever_trained():
    method, model = method_and_model()
    method._trained[1][[3, 5, 900]] = True
    state = method.extra_state()
    resumed, model2 = method_and_model()
    resumed.load_extra_state(state)
    assert torch.equal(resumed._trained[1], method._trained[1]) and resumed._trained[1].sum() == 3
    assert resumed.summary_stats(model2)["rows_trained"] == 3


def test_recording_stays_on_across_a_save(tmp_path, tokenizer):
    method, model = method_and_model()
    method.save(model, tokenizer, tmp_path / "out", standalone=True)
    assert all(m.record for m in memory_layers(model).values())


def test_a_layer_no_backward_pass_reached_gives_the_optimizer_no_gradient():
    """With factored value gradients, a step whose backward pass never reached a memory leaves its V.grad
    None, as the sparse gradient would (a zero gradient would still move lazy Adam's rows by momentum)."""
    method, model = method_and_model(optimizer="adam")
    optimizer = method.make_optimizer(model)
    b = batch()
    method.before_forward(model, b)
    model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    method.after_forward(model)
    method.before_step(model, optimizer)
    assert method.factored and all(m.values.grad is None for m in memory_layers(model).values())
    assert all(n > 0 for n in method._selected.values())  # rows were chosen; there is no gradient to give them
