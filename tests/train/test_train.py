"""The trainer: strict sparsity of SMF, what LoRA and full finetuning touch, resume."""

import json
import math

import pytest
import torch

from conftest import chosen_rows, memory_folder, tiny_model
from smf.data.types import TrainExample
from smf.errors import SmfError
from smf.memory import MemoryConfig, memory_layers, retrofit, save_retrofitted
from smf.optim import SparseRowOptimizer
from smf.data.batching import collate, encode_examples, step_indices
from smf.train import TrainConfig, train

MEM = MemoryConfig(layers=(1, 3), slots=256, heads=2, topk=4, key_dim=16)
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def cfg(**settings) -> TrainConfig:
    """A TrainConfig from flat keyword settings (shared and the method's options)."""
    return TrainConfig.from_dict(settings)


def examples(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        w = [WORDS[j] for j in torch.randint(0, len(WORDS), (6,), generator=g)]
        out.append(TrainExample(prompt=f"Question: what follows {w[0]} {w[1]}?\nAnswer:", target=" " + " ".join(w[2:])))
    return out


@pytest.fixture(scope="module")
def smf_folder(tmp_path_factory, tokenizer):
    """A tiny retrofitted model with background statistics, saved as a folder; the tests only read
    it (training writes its runs elsewhere)."""
    return memory_folder(tmp_path_factory.mktemp("train") / "retro", tokenizer, MEM, " ".join(WORDS * 20))


def load(path):
    from smf.memory import load_retrofitted

    return load_retrofitted(path)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rowwise_adagrad"])
def test_smf_is_strictly_sparse(smf_folder, tokenizer, tmp_path, monkeypatch, optimizer):
    """50 steps: unselected rows bit-identical; each row changes only on steps that select it."""
    selected = []
    original = SparseRowOptimizer.set_rows
    monkeypatch.setattr(SparseRowOptimizer, "set_rows", lambda self, rows, valid=None: (selected.append(chosen_rows(rows, valid)), original(self, rows, valid))[1])
    model = load(smf_folder)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not n.endswith("memory.values")}
    values = {i: m.values for i, m in memory_layers(model).items()}
    snapshots = [{i: v.detach().cpu().clone() for i, v in values.items()}]  # on the CPU, wherever training ran
    config = cfg(method="smf", rule="tfidf", top_t=12, optimizer=optimizer, lr=50.0 if optimizer == "sgd" else 0.5,
                 steps=50, batch_size=4, max_length=64)
    eval_fn = lambda m, step: snapshots.append({i: v.detach().cpu().clone() for i, v in values.items()}) or {}  # noqa: E731
    result = train(model, tokenizer, examples(), config, tmp_path / "run", model_dir=smf_folder, eval_fn=eval_fn, eval_every=1,
                   progress=False, save_model=False)
    assert len(selected) == 50 and len(snapshots) == 51
    ever = {i: set() for i in values}
    for step, rows in enumerate(selected):
        for i, v in values.items():
            chosen = set(rows[v].tolist())
            assert 0 < len(chosen) <= 12
            changed = (snapshots[step + 1][i] != snapshots[step][i]).any(-1).nonzero().flatten().tolist()
            assert set(changed) <= chosen, f"step {step}: rows changed without being selected"
            ever[i] |= chosen
    for i, v in values.items():
        never = torch.ones(v.shape[0], dtype=torch.bool)
        never[list(ever[i])] = False
        assert torch.equal(v.detach().cpu()[never], snapshots[0][i][never]), "never-selected rows must be bit-identical"
        assert (v.detach() != snapshots[0][i]).any(), "training changed nothing"
    for n, p in model.named_parameters():
        if n in base:
            assert torch.equal(p.detach(), base[n]), f"{n} changed"
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert all(r["rows_selected"] == sum(r["rows_selected_per_layer"].values()) for r in steps)
    if optimizer == "sgd":
        assert result.summary["optimizer_state_bytes"] == 0
    elif optimizer == "rowwise_adagrad":  # one fp32 per row of each table
        assert result.summary["optimizer_state_bytes"] == sum(v.shape[0] * 4 for v in values.values())
    else:  # the row index of each table plus two fp32 moments for at least the rows selected
        rows = sum(len(e) for e in ever.values())
        assert result.summary["optimizer_state_bytes"] >= sum(v.shape[0] * 8 for v in values.values()) + rows * 2 * 4 * values[1].shape[1]


def test_lora_trains_on_an_adapter_loaded_frozen(tmp_path, tokenizer):
    """A stream's later chunk starts from the adapter of the earlier ones (PEFT loads it frozen):
    its LoRA weights train on, the base stays frozen."""
    from peft import LoraConfig, get_peft_model

    from smf.methods import make_method
    from smf.models import load_model

    base_dir = _plain_folder(tmp_path, tokenizer)
    model, _ = load_model(base_dir)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    model.requires_grad_(False)
    prepared = make_method(cfg(method="lora")).prepare(model, base_dir)
    trainable = [n for n, p in prepared.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert len(trainable) == 2 * 4  # lora_A and lora_B of q_proj in each of the 4 blocks


@pytest.mark.slow
def test_lora_trains_only_adapters(tmp_path, tokenizer):
    from safetensors import safe_open

    from smf.models import load_model

    base_dir = _plain_folder(tmp_path, tokenizer)
    model, _ = load_model(base_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = cfg(method="lora", steps=4, batch_size=4, lr=1e-2, max_length=64)
    result = train(model, tokenizer, examples(), config, tmp_path / "run", model_dir=base_dir, progress=False)
    # the adapter holds LoRA weights only, for every linear layer of every block (r = 16)
    with safe_open(str(tmp_path / "run" / "model" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)
    linears = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    assert len(keys) == 2 * 4 * len(linears)
    assert result.summary["trainable_parameters"] == sum(16 * (a + b) for a, b in [(48, 48), (48, 24), (48, 24), (48, 48), (48, 96), (48, 96), (96, 48)]) * 4
    # merged into the base, only those linear weights differ from the base model
    merged = result.model
    for n, p in merged.named_parameters():
        is_target = any(f".{lin}." in n for lin in linears)
        assert torch.equal(p.detach().cpu(), before[n]) != is_target, n
    # the adapter folder loads onto its base and merges to the same weights
    reloaded, _ = load_model(tmp_path / "run" / "model")
    for n, p in reloaded.named_parameters():
        torch.testing.assert_close(p, dict(merged.named_parameters())[n].cpu())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["smf", "full"])
def test_the_step_phases_are_named_in_torchs_profiler(method, smf_folder, tmp_path, tokenizer):
    """Each phase of a step is a range in torch's profiler, once per micro-batch or step (bench/gpu.py
    reads them); SMF clips its own rows, so only full finetuning has a clip range."""
    model = load(smf_folder) if method == "smf" else tiny_model(vocab_size=len(tokenizer))
    config = cfg(method=method, steps=2, batch_size=4, grad_accum=2, max_length=64, lr=0.5 if method == "smf" else 1e-3,
                 **(dict(top_t=8) if method == "smf" else {}))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        train(model, tokenizer, examples(), config, tmp_path / "run", model_dir=smf_folder if method == "smf" else None,
              progress=False, save_model=False)
    counts = {e.key: e.count for e in prof.key_averages() if e.key.startswith("train/")}
    assert counts == {"train/forward": 4, "train/backward": 4, "train/before_step": 2, "train/optimizer": 2,
                      **({"train/clip": 2} if method == "full" else {})}


def test_full_trains_every_weight(tmp_path, tokenizer):
    model = tiny_model(vocab_size=len(tokenizer))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, tokenizer, examples(), cfg(method="full", steps=2, batch_size=4, lr=1e-3, max_length=64),
          tmp_path / "run", progress=False, save_model=False)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p.detach().cpu(), before[n])]
    assert unchanged == []


@pytest.mark.slow
@pytest.mark.parametrize("method, extra", [("smf", dict(rule="random", top_t=8)), ("smf", dict(rule="kl", top_t=8)),
                                           ("smf", dict(rule="tfidf", top_t=8, optimizer="sgd")),
                                           ("smf", dict(rule="tfidf", top_t=8, optimizer="rowwise_adagrad")), ("lora", {}), ("full", {}),
                                           ("replay", dict(of="full", general="docstrings", ratio=0.5)),
                                           ("kl-anchor", dict(of="full", general="docstrings", kl_windows=2))])
def test_resume_is_bit_identical(method, extra, smf_folder, tmp_path, tokenizer):
    config = cfg(method=method, steps=6, batch_size=4, checkpoint_every=2, max_length=64, lr=1e-2 if method != "smf" else 0.5, **extra)
    folder = smf_folder if method == "smf" else _plain_folder(tmp_path, tokenizer)

    def fresh():
        return load(folder) if method == "smf" else __import__("smf.models", fromlist=["load_model"]).load_model(folder)[0]

    whole = train(fresh(), tokenizer, examples(), config, tmp_path / "whole", model_dir=folder, progress=False, save_model=False)

    class Killed(Exception):
        pass

    def kill_at_5(model, step):
        if step == 5:
            raise Killed
        return {}

    with pytest.raises(Killed):
        train(fresh(), tokenizer, examples(), config, tmp_path / "killed", model_dir=folder, eval_fn=kill_at_5, eval_every=1, progress=False, save_model=False)
    resumed = train(fresh(), tokenizer, examples(), config, tmp_path / "killed", model_dir=folder, resume=True, progress=False, save_model=False)
    assert resumed.summary["resumed_from_step"] == 4
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = [json.loads(line) for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    whole_log = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log if "loss" in r] == [r["loss"] for r in whole_log]


def _plain_folder(tmp_path, tokenizer):
    path = tmp_path / "plain"
    if not path.exists():
        model = tiny_model(vocab_size=len(tokenizer))
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path


def test_encode_puts_loss_on_target_only(tokenizer):
    [enc] = encode_examples([TrainExample("Question: 2+2?\nAnswer:", " four")], tokenizer, 64)
    batch = collate([enc], tokenizer.pad_token_id)
    target = batch["labels"][batch["labels"] != -100]
    assert tokenizer.decode(target) == " four"  # over-long examples: tests/data/test_data_batching.py


def test_step_order_is_a_pure_function_of_seed_and_step():
    assert step_indices(10, 3, 4, seed=1) == step_indices(10, 3, 4, seed=1)
    epoch = sum((step_indices(10, s, 5, seed=2) for s in range(2)), [])
    assert sorted(epoch) == list(range(10))
    assert step_indices(10, 0, 5, seed=2) != step_indices(10, 0, 5, seed=3)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(method="adapters"), "unknown method 'adapters'"),
        (dict(rule="bm25"), "unknown selection rule 'bm25'"),
        (dict(top_t=0), "top_t must be a positive"),
        (dict(steps="3"), "steps: expected an integer"),
        (dict(method="lora", top_t=3), "'top_t' is an option of smf, not of lora"),
        (dict(lora_r=3), "this key is now 'rank'"),
        (dict(batch_size=6, grad_accum=4), "not a multiple"),
    ],
)
def test_config_rejects_bad_values(change, message):
    with pytest.raises(SmfError, match=message):
        cfg(**change)


def test_unknown_config_key():
    with pytest.raises(SmfError, match="unknown key 'stepz'; did you mean 'steps'"):
        TrainConfig.from_dict({"stepz": 3})


def test_a_bad_value_names_where_it_was_written():
    with pytest.raises(SmfError, match=r"^methods.x: unknown method 'smff'; choose one of .*did you mean 'smf'"):
        TrainConfig.from_dict({"method": "smff"}, where="methods.x")
    with pytest.raises(SmfError, match=r"^methods.x: unknown mixed precision 'fp16'; choose one of auto, no, bf16"):
        TrainConfig.from_dict({"mixed_precision": "fp16"}, where="methods.x")
    with pytest.raises(SmfError, match=r"^methods.x: count: unknown choice 'targets'; choose one of all, target, padded; did you mean 'target'"):
        TrainConfig.from_dict({"method": "smf", "count": "targets"}, where="methods.x")


def test_smf_needs_memory_and_background(tmp_path, tokenizer):
    with pytest.raises(SmfError, match="needs a model with memory layers"):
        train(tiny_model(vocab_size=len(tokenizer)), tokenizer, examples(), cfg(steps=1), tmp_path / "a", progress=False)
    folder = save_retrofitted(retrofit(tiny_model(vocab_size=len(tokenizer)), MEM), tokenizer, tmp_path / "nobg")
    with pytest.raises(SmfError, match="no background statistics"):
        train(load(folder), tokenizer, examples(), cfg(steps=1), tmp_path / "b", model_dir=folder, progress=False)


def test_existing_run_folder_is_not_overwritten(smf_folder, tmp_path, tokenizer):
    config = cfg(steps=1, batch_size=2, top_t=4, max_length=64)
    train(load(smf_folder), tokenizer, examples(), config, tmp_path / "run", model_dir=smf_folder, progress=False, save_model=False)
    with pytest.raises(SmfError, match="already holds a run"):
        train(load(smf_folder), tokenizer, examples(), config, tmp_path / "run", model_dir=smf_folder, progress=False)
    with pytest.raises(SmfError, match="finished run"):
        train(load(smf_folder), tokenizer, examples(), config, tmp_path / "run", model_dir=smf_folder, resume=True, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["smf", "lora", "full"])
def test_bf16_autocast_path(method, smf_folder, tmp_path, tokenizer):
    """The GPU path's bf16 autocast, exercised on the CPU: no dtype errors, finite loss, weights move."""
    folder = smf_folder if method == "smf" else _plain_folder(tmp_path, tokenizer)
    from smf.models import load_model

    model = load(folder) if method == "smf" else load_model(folder)[0]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = cfg(method=method, steps=2, batch_size=4, max_length=64, lr=0.5 if method == "smf" else 1e-3, mixed_precision="bf16",
                 **(dict(top_t=16) if method == "smf" else {}))
    result = train(model, tokenizer, examples(), config, tmp_path / "run", model_dir=folder, progress=False, save_model=False)
    assert all(math.isfinite(x) for x in (result.summary["first_loss"], result.summary["final_loss"]))
    after = dict(result.model.named_parameters())
    moved = [n for n, p in before.items() if n in after and not torch.equal(p, after[n].detach().cpu())]
    assert moved and all(torch.isfinite(after[n]).all() for n in moved)  # weights moved, and stayed numbers


@pytest.mark.slow
@pytest.mark.parametrize("method", ["smf", "lora", "full"])
def test_gradient_checkpointing_recomputes_and_changes_nothing(method, smf_folder, tmp_path, tokenizer):
    """With gradient_checkpointing the layers that need a backward pass run their FFN twice per micro-batch
    (forward, then recomputed in the backward), the layers below SMF's first memory once (no
    backward reaches them), and the run is bit-identical to one without; afterwards checkpointing
    is off again."""
    from smf.models import load_model

    folder = smf_folder if method == "smf" else _plain_folder(tmp_path, tokenizer)
    lr = 0.5 if method == "smf" else 1e-2
    runs = {}
    for on in (False, True):
        model = load(folder) if method == "smf" else load_model(folder)[0]
        calls = {i: 0 for i in range(len(model.model.layers))}
        for i, layer in enumerate(model.model.layers):
            # a pre-hook: inside the checkpoint, and reached by a recompute that stops early (as torch's does
            # once it has every tensor the backward needs)
            layer.mlp.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
        config = cfg(method=method, steps=3, batch_size=4, grad_accum=2, max_length=64, lr=lr, gradient_checkpointing=on)
        result = train(model, tokenizer, examples(), config, tmp_path / f"run{on}", model_dir=folder, progress=False, save_model=False)
        runs[on] = (result, dict(calls))
        if on:  # checkpointing is off again: a forward and backward in training mode runs each FFN once
            before = dict(calls)
            model.train()
            model.requires_grad_(True)
            model.model(input_ids=torch.tensor([[1, 2, 3]], device=model.device)).last_hidden_state.sum().backward()
            assert all(calls[i] == before[i] + 1 for i in calls)
    (plain, plain_calls), (checkpointed, ck_calls) = runs[False], runs[True]
    micro_batches = 3 * 2
    assert set(plain_calls.values()) == {micro_batches}
    first_trained = min(MEM.layers) if method == "smf" else 0
    assert [ck_calls[i] for i in sorted(ck_calls)] == [micro_batches * (1 + (i >= first_trained)) for i in sorted(ck_calls)]
    assert [r["loss"] for r in plain.log] == [r["loss"] for r in checkpointed.log]
    a, b = plain.model.state_dict(), checkpointed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_factored_value_gradients_train_as_the_sparse_ones(smf_folder, tokenizer, tmp_path, monkeypatch, optimizer):
    """SMF keeps V's gradient factored until the step's rows are chosen (memory.factored_grad); the run
    selects the same rows and ends within float tolerance of one with embedding_bag's sparse gradient."""
    from smf.methods.smf import SmfMethod

    runs = {}
    for factored in (True, False):
        monkeypatch.setattr(SmfMethod, "factored", property(lambda self, f=factored: f))
        selected = []
        original = SparseRowOptimizer.set_rows
        monkeypatch.setattr(SparseRowOptimizer, "set_rows", lambda self, rows, valid=None: (
            selected.append(list(chosen_rows(rows, valid).values())), original(self, rows, valid))[1])
        model = load(smf_folder)
        if factored:  # the backward pass leaves no V.grad, only its factors
            seen = []
            monkeypatch.setattr(SmfMethod, "before_step", lambda self, m, o, bs=SmfMethod.before_step: (
                seen.append([(x.values.grad, len(x.grad_parts)) for x in self.memories.values()]), bs(self, m, o))[1])
        config = cfg(method="smf", rule="tfidf", top_t=12, optimizer=optimizer, lr=50.0 if optimizer == "sgd" else 0.5,
                     steps=6, batch_size=4, grad_accum=2, max_length=64)
        result = train(model, tokenizer, examples(), config, tmp_path / f"run{factored}", model_dir=smf_folder, progress=False, save_model=False)
        runs[factored] = (selected, {i: m.values.detach() for i, m in memory_layers(result.model).items()}, result.log)
        monkeypatch.undo()
    (rows_f, values_f, log_f), (rows_s, values_s, log_s) = runs[True], runs[False]
    assert seen and all(grad is None and parts == 2 for step in seen for grad, parts in step)  # 2 micro-batches a step
    assert len(rows_f) == 6 and all(torch.equal(a, b) for f, s in zip(rows_f, rows_s) for a, b in zip(f, s))
    for i in values_f:
        assert (values_f[i] != 0).any()
        torch.testing.assert_close(values_f[i], values_s[i], rtol=1e-4, atol=1e-5)  # sums in another order (Adam divides by |g|)
    assert [r["rows_changed"] for r in log_f if "loss" in r] == [r["rows_changed"] for r in log_s if "loss" in r]
