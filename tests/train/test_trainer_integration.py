"""transformers' Trainer with smf.SmfOptimizer trains as `smf train --method smf` does: the same rows each
step, the same weights, nothing else moved; its checkpoints resume to the same weights; what it saves
loads as smf's own folders do."""

from functools import partial

import pytest
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

import smf
from smf.data.batching import collate, encode_examples, step_indices
from smf.data.types import TrainExample
from smf.methods import TrainConfig
from smf.methods.smf import SmfOptions
from smf.selection import RowSelector
from smf.train import train

from conftest import memory_folder

pytestmark = pytest.mark.slow  # each test trains (a few seconds)

MEMORY = dict(layers=(1, 2), slots=256, heads=2, topk=4, key_dim=16)
TOP_T, LR, STEPS, BATCH, ACCUM = 8, 0.05, 6, 4, 2
CLIP = 0.01  # below the steps' gradient norms here (checked at the last step), so clipping acts


@pytest.fixture(scope="module")
def start(tmp_path_factory, tokenizer):
    """A tiny retrofitted model with background statistics, saved as a folder both sides start from."""
    return memory_folder(tmp_path_factory.mktemp("trainer") / "memory", tokenizer, smf.MemoryConfig(**MEMORY))


@pytest.fixture(scope="module")
def data(tokenizer):
    facts = [(f"Where does the keeper of lighthouse {n} live?", f" In the village of {town}.")
             for n, town in enumerate(["Arnholt", "Brisk", "Calloway", "Dunmere", "Eastvale", "Fairlight", "Glenrock",
                                       "Hollins", "Ivybridge", "Jarrow"])]
    return encode_examples([TrainExample(q, a) for q, a in facts], tokenizer, 64)


@pytest.fixture
def selections(monkeypatch):
    """Every (layer, rows) RowSelector chooses, in order (select, or select_fixed's valid rows): what both sides chose,
    step by step."""
    chosen = []
    select = RowSelector.select

    def spy(self, layer, rows, counts):
        out = select(self, layer, rows, counts)
        chosen.append((layer, out.clone()))
        return out

    def spy_fixed(self, layer, counts):
        rows, valid = select_fixed(self, layer, counts)
        chosen.append((layer, rows[valid].clone()))
        return rows, valid

    select_fixed = RowSelector.select_fixed
    monkeypatch.setattr(RowSelector, "select", spy)
    monkeypatch.setattr(RowSelector, "select_fixed", spy_fixed)
    return chosen


def trainer_run(start, tokenizer, items, out, *, sequential: bool, save_steps: int = 0, resume=None, callbacks=(), count="all",
                rule="tfidf", **arguments):
    """SMF through transformers' Trainer from the folder `start`: micro-batches of BATCH / ACCUM, ACCUM of them a step."""
    model, _ = smf.load(start)
    optimizer = smf.SmfOptimizer(model, start, top_t=TOP_T, lr=LR, max_grad_norm=CLIP, count=count, rule=rule)
    args = TrainingArguments(str(out), max_steps=STEPS, per_device_train_batch_size=BATCH // ACCUM, gradient_accumulation_steps=ACCUM,
                             lr_scheduler_type="constant", report_to="none", use_cpu=True, remove_unused_columns=False,
                             save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500, disable_tqdm=True,
                             train_sampling_strategy="sequential" if sequential else "random", seed=0, **arguments)
    trainer = Trainer(model=model, args=args, train_dataset=items, data_collator=partial(collate, pad_id=tokenizer.pad_token_id),
                      optimizers=(optimizer, None), processing_class=tokenizer, callbacks=list(callbacks))
    trainer.train(resume_from_checkpoint=resume)
    return model, trainer


def weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("Where does the keeper of lighthouse 3 live?", return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**ids).logits


@pytest.mark.parametrize("count", ["all", "target"])
def test_trainer_trains_as_smf_train_does(start, data, tokenizer, tmp_path, selections, count):
    """6 steps of 4 examples in 2 micro-batches: `smf train`'s loop, then Trainer + SmfOptimizer on the same batches
    (the loop's seeded order, read sequentially): the same rows at every step and layer, weights within 1e-6, and
    against the start: every weight but the value tables, and every value row never selected, bit-identical.
    Rows ranked by every token's reads (count all) or by those of the answers' positions only (target)."""
    config = TrainConfig(method="smf", steps=STEPS, batch_size=BATCH, grad_accum=ACCUM, lr=LR, max_grad_norm=CLIP,
                         options=SmfOptions(top_t=TOP_T, count=count))
    loop_model = train(smf.load(start)[0], tokenizer, data, config, tmp_path / "run", model_dir=start, save_model=False,
                       progress=False).model
    by_loop = selections[:]
    selections.clear()
    order = [data[i] for step in range(STEPS) for i in step_indices(len(data), step, BATCH, config.seed)]
    trainer_model, trainer = trainer_run(start, tokenizer, order, tmp_path / "trainer", sequential=True, count=count)
    by_trainer = selections[:]
    assert trainer.optimizer.optimizer.last_stats["grad_norm"] > CLIP  # the last step's rows were clipped

    assert len(by_loop) == STEPS * len(MEMORY["layers"]) and all(len(rows) for _, rows in by_loop)
    assert [layer for layer, _ in by_trainer] == [layer for layer, _ in by_loop]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(by_trainer, by_loop)), "other rows selected"
    ours, theirs, before = weights(trainer_model), weights(loop_model), weights(smf.load(start)[0])
    assert ours.keys() == theirs.keys() == before.keys()
    gap = max((ours[n] - theirs[n]).abs().max().item() for n in ours)
    assert gap <= 1e-6, gap
    selected = {i: torch.cat([rows for layer, rows in by_trainer if layer == i]).unique() for i in MEMORY["layers"]}
    for name, w in ours.items():
        if name.endswith("memory.values"):
            layer = int(name.split(".")[2])
            unselected = torch.ones(len(w), dtype=torch.bool)
            unselected[selected[layer]] = False
            assert torch.equal(w[unselected], before[name][unselected]), name
            assert not torch.equal(w[selected[layer]], before[name][selected[layer]]), f"{name}: the selected rows did not train"
        else:
            assert torch.equal(w, before[name]), f"{name} moved"
            assert torch.equal(theirs[name], before[name]), f"{name} moved in smf train"

    # The saved model loads as smf's own folders do: with transformers (trust_remote_code) and with smf.load.
    trainer.save_model(str(tmp_path / "saved"))
    expected = logits(trainer_model, tokenizer)
    remote = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", trust_remote_code=True)
    assert type(remote).__name__ == "SmfForCausalLM"
    assert torch.equal(logits(remote, tokenizer), expected)
    assert torch.equal(logits(smf.load(tmp_path / "saved")[0], tokenizer), expected)


def test_trainer_gradient_checkpointing_changes_nothing(start, data, tokenizer, tmp_path, selections):
    """TrainingArguments(gradient_checkpointing=True) recomputes each layer's forward pass in the backward pass (and
    the memories' reads with it): the same rows are chosen and the same weights come out, bit for bit."""
    plain, _ = trainer_run(start, tokenizer, data, tmp_path / "plain", sequential=True)
    chosen = selections[:]
    selections.clear()
    recomputed, _ = trainer_run(start, tokenizer, data, tmp_path / "recomputed", sequential=True, gradient_checkpointing=True)
    assert len(selections) == len(chosen) and all(torch.equal(a, b) for (_, a), (_, b) in zip(selections, chosen))
    ours, theirs = weights(recomputed), weights(plain)
    assert all(torch.equal(ours[n], theirs[n]) for n in ours)


class StopAt(TrainerCallback):
    """Stops training after `step` (the Trainer checkpoints first when the step is a save step): a run cut short."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


@pytest.mark.parametrize("rule", ["tfidf", "random"])
def test_trainer_resume_mid_run_gives_the_same_weights(start, data, tokenizer, tmp_path, selections, rule):
    """A run stopped after its step-3 checkpoint and resumed by a fresh model, optimizer and Trainer ends with the
    uninterrupted run's weights, bit for bit (the random rule's draws continue too); the checkpoint's optimizer.pt
    holds only the selected rows' state."""
    items = data * 2  # 20 examples, read in the Trainer's own random order
    whole, _ = trainer_run(start, tokenizer, items, tmp_path / "whole", sequential=False, rule=rule)
    uninterrupted = selections[:]
    selections.clear()
    trainer_run(start, tokenizer, items, tmp_path / "cut", sequential=False, save_steps=3, callbacks=[StopAt(3)], rule=rule)
    checkpoint = tmp_path / "cut" / "checkpoint-3"
    assert checkpoint.is_dir() and not (tmp_path / "cut" / "checkpoint-6").exists()
    assert [len(rows) for _, rows in selections] == [len(rows) for _, rows in uninterrupted[: len(selections)]]
    selections.clear()
    resumed, _ = trainer_run(start, tokenizer, items, tmp_path / "cut", sequential=False, save_steps=3, resume=True, rule=rule)
    assert len(selections) == 3 * len(MEMORY["layers"])  # steps 4 to 6 only
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(selections, uninterrupted[-len(selections):]))
    ours, theirs = weights(resumed), weights(whole)
    assert all(torch.equal(ours[n], theirs[n]) for n in ours), [n for n in ours if not torch.equal(ours[n], theirs[n])]

    # What Trainer wrote (torch.save) read back with its own loader: tensors of the selected rows only, never a table.
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    trained = saved["smf"]["trained"]
    assert sorted(saved["state"]) == [0, 1] and saved["smf"]["layers"] == list(MEMORY["layers"])
    for index, state in saved["state"].items():
        rows = len(trained[index])
        assert 0 < rows <= 3 * TOP_T and torch.equal(state["rows"], trained[index])
        assert {k: tuple(v.shape) for k, v in state.items()} == {"rows": (rows,), "m": (rows, 48), "v": (rows, 48), "step": (rows,)}


def test_optimizer_state_round_trips_and_refuses_another_memory(start, tmp_path, tokenizer, data):
    """A model and SmfOptimizer rebuilt from state_dict()s take the next step as the originals do (a fresh optimizer
    does not: the state matters); the state of another memory is one SmfError naming the fix."""
    batch = collate(data[:4], tokenizer.pad_token_id)

    def step(model, optimizer):
        model.train()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    def copy_of(model):
        twin = smf.load(start)[0]
        twin.load_state_dict(model.state_dict())
        return twin

    model, _ = smf.load(start)
    optimizer = smf.SmfOptimizer(model, start, top_t=TOP_T, lr=LR)
    optimizer.param_groups[0]["lr"] = LR / 2  # set by hand (or a schedule): the state carries it
    step(model, optimizer)
    twin, fresh = copy_of(model), copy_of(model)
    twin_optimizer = smf.SmfOptimizer(twin, start, top_t=TOP_T, lr=LR)
    twin_optimizer.load_state_dict(optimizer.state_dict())
    fresh_optimizer = smf.SmfOptimizer(fresh, start, top_t=TOP_T, lr=LR)
    for m, o in ((model, optimizer), (twin, twin_optimizer), (fresh, fresh_optimizer)):
        step(m, o)
    ours, theirs, anew = weights(model), weights(twin), weights(fresh)
    assert all(torch.equal(ours[n], theirs[n]) for n in ours)
    assert not all(torch.equal(ours[n], anew[n]) for n in ours)

    folder = memory_folder(tmp_path / "other", tokenizer, smf.MemoryConfig(**{**MEMORY, "slots": 1024}))
    elsewhere = smf.SmfOptimizer(smf.load(folder)[0], folder, top_t=TOP_T)
    with pytest.raises(smf.SmfError, match="another memory.*start without resuming"):
        elsewhere.load_state_dict(optimizer.state_dict())


def test_trl_sft_trainer_trains_with_smf_optimizer(start, tokenizer, tmp_path, selections):
    """TRL's SFTTrainer (a Trainer) takes SmfOptimizer the same way: 4 steps of 2 micro-batches select rows at every
    step and layer, and only those rows move; its checkpoint loads with smf.load. Skipped where trl is not installed
    (not a dependency of smf; `pip install trl --no-deps` adds it beside this transformers)."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    model, _ = smf.load(start)
    before = weights(model)
    data = Dataset.from_dict({"text": [f"The keeper of lighthouse {n} lives in {town}." for n, town in
                                       enumerate(["Arnholt", "Brisk", "Calloway", "Dunmere", "Eastvale", "Fairlight"])]})
    args = trl.SFTConfig(str(tmp_path / "sft"), max_steps=4, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                         report_to="none", use_cpu=True, disable_tqdm=True, save_steps=4)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                             optimizers=(smf.SmfOptimizer(model, start, top_t=TOP_T, lr=LR), None))
    trainer.train()
    assert len(selections) == 4 * len(MEMORY["layers"]) and all(0 < len(rows) <= TOP_T for _, rows in selections)
    after = weights(model)
    for name in after:
        if name.endswith("memory.values"):
            layer = int(name.split(".")[2])
            moved = (after[name] != before[name]).any(-1).nonzero().flatten()
            selected = torch.cat([rows for i, rows in selections if i == layer]).unique()
            assert len(moved) and set(moved.tolist()) <= set(selected.tolist()), name
        else:
            assert torch.equal(after[name], before[name]), f"{name} moved"
    saved, _ = smf.load(tmp_path / "sft" / "checkpoint-4")
    assert all(torch.equal(p, after[n]) for n, p in saved.named_parameters())
