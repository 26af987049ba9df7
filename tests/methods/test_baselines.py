"""The baselines a practitioner reaches for against forgetting: replay (general text mixed into each step)
and kl-anchor (a KL term to the base model's outputs on general text), each a method wrapping another.
Their terms are checked by hand on a tiny model; then each runs through `smf train`, a study and a stream."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import tiny_model
from smf.cli import main
from smf.config import read_config
from smf.data.batching import Encoded
from smf.errors import SmfError
from smf.methods import METHODS, TrainConfig, families, make_method
from smf.methods.replay import ReplayTerm
from smf.methods.terms import BaseKl, InTurn, general_windows

ROOT = Path(__file__).resolve().parents[2]


def _windows(n=3, length=10, seed=0, vocab=96) -> list[Encoded]:
    g = torch.Generator().manual_seed(seed)
    return [Encoded(torch.randint(3, vocab, (length - i,), generator=g).tolist(), 0) for i in range(n)]


def _grads(model) -> dict:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _by_autograd(model, loss) -> dict:
    model.zero_grad(set_to_none=True)
    loss.backward()
    out = _grads(model)
    model.zero_grad(set_to_none=True)
    return out


def _term_grads(model, term, step=0) -> tuple[float, dict]:
    model.zero_grad(set_to_none=True)
    value = term.backward(model, step, device="cpu", autocast=torch.autocast("cpu", enabled=False), backward=lambda loss: loss.backward())
    out = _grads(model)
    model.zero_grad(set_to_none=True)
    return value, out


def _full_logprobs(model, batch) -> torch.Tensor:
    """Every position's next-token log-probabilities where the next token is a real one, through the model's own
    forward (all logits), in row-major order."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    where = batch["attention_mask"][:, 1:].bool()
    return logits[:, :-1][where].float().log_softmax(-1)


def test_replay_term_is_ratio_times_the_windows_mean_token_loss():
    model = tiny_model().train()
    windows = InTurn(_windows(), per_step=2, pad_id=0)
    value, grads = _term_grads(model, ReplayTerm(windows, ratio=0.25), step=1)  # step 1: windows 2 and 0
    batch = windows.batch(1, "cpu")
    assert batch["input_ids"].shape[0] == 2 and torch.equal(batch["input_ids"][0, :8], torch.tensor(_windows()[2].ids))
    targets = batch["input_ids"][:, 1:][batch["attention_mask"][:, 1:].bool()]
    by_hand = F.nll_loss(_full_logprobs(model, batch), targets)  # mean over the 9 + 7 predicted tokens
    assert value == pytest.approx(by_hand.item(), rel=1e-5)
    expected = _by_autograd(model, 0.25 * by_hand)
    assert grads.keys() == expected.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected[name], rtol=1e-4, atol=1e-7)


def test_kl_term_is_the_weighted_mean_kl_from_the_frozen_start():
    model = tiny_model().train()
    frozen = copy.deepcopy(model).requires_grad_(False).eval()
    with torch.no_grad():  # the model has moved away from where it started
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    windows = InTurn(_windows(), per_step=3, pad_id=0)
    value, grads = _term_grads(model, BaseKl(windows, weight=2.0, frozen=frozen))
    batch = windows.batch(0, "cpu")
    with torch.no_grad():
        ref = _full_logprobs(frozen, batch)
    logp = _full_logprobs(model, batch)
    kl = (ref.exp() * (ref - logp)).sum(-1).mean()  # KL(base ‖ model) per token, averaged
    assert float(kl) > 1e-3 and value == pytest.approx(float(kl), rel=1e-4)
    expected = _by_autograd(model, 2.0 * kl)
    for name in expected:  # a flipped sign would pull away from the base
        torch.testing.assert_close(grads[name], expected[name], rtol=1e-4, atol=1e-7)


def test_kl_term_with_lora_takes_the_base_with_its_adapters_off():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    windows = InTurn(_windows(), per_step=2, pad_id=0)
    term = BaseKl(windows, weight=1.0)
    assert term.backward(model, 0, device="cpu", autocast=torch.autocast("cpu", enabled=False), backward=lambda loss: None) == 0.0
    with torch.no_grad():  # the adapters move: the model is no longer its base
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    batch = windows.batch(0, "cpu")
    with torch.no_grad(), model.disable_adapter():
        ref = _full_logprobs(model, batch)
    kl = (ref.exp() * (ref - _full_logprobs(model, batch))).sum(-1).mean()
    value, grads = _term_grads(model, term)
    assert float(kl) > 1e-3 and value == pytest.approx(float(kl), rel=1e-4)
    expected = _by_autograd(model, kl)
    assert grads.keys() == expected.keys() and all("lora_" in n for n in grads)
    for name in expected:
        torch.testing.assert_close(grads[name], expected[name], rtol=1e-4, atol=1e-7)


def test_general_windows_are_seeded_bounded_and_refuse_empty_text(tokenizer, tmp_path):
    text = tmp_path / "notes.jsonl"
    text.write_text("".join(json.dumps({"text": f"Document {i}: " + f"word {i} of prose " * 6}) + "\n" for i in range(6)))
    a = general_windows(str(text), tokenizer, 16, 5, seed=1, where="w")
    assert len(a) == 5 and all(8 <= len(w.ids) <= 16 and w.n_prompt == 0 for w in a)
    assert [w.ids for w in a] == [w.ids for w in general_windows(str(text), tokenizer, 16, 5, seed=1, where="w")]
    assert [w.ids for w in a] != [w.ids for w in general_windows(str(text), tokenizer, 16, 5, seed=2, where="w")]
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"text": "Hi."}) + "\n")
    with pytest.raises(SmfError, match="no window of 8 tokens"):
        general_windows(str(short), tokenizer, 16, 5, seed=0, where="w")


def test_wrappers_take_the_wrapped_methods_options_and_refuse_anothers():
    config = TrainConfig.from_dict({"method": "replay", "of": "lora", "rank": 4, "ratio": 0.25})
    method = make_method(config)
    assert type(method.inner).__name__ == "LoraMethod" and method.inner.options.rank == 4 and method.lr == 2e-4
    assert set(config.to_dict()) >= {"of", "ratio", "general", "rank"} and "top_t" not in config.to_dict()
    assert TrainConfig.from_dict(config.to_dict()).options == config.options
    assert METHODS["replay"].uses_memory(TrainConfig.from_dict({"method": "replay", "of": "smf"}))
    assert not METHODS["kl-anchor"].uses_memory(TrainConfig.from_dict({"method": "kl-anchor", "of": "full"}))
    assert {"replay-smf", "replay-lora", "replay-full", "kl-anchor-lora", "kl-anchor-full"} <= set(families())
    assert families()["replay-smf"].compared_as == "smf" and families()["kl-anchor-full"].compared_as == "baseline"
    for raw, message in (({"method": "replay", "of": "full", "rank": 4}, "'rank' is an option of lora; replay of full"),
                         ({"method": "kl-anchor", "of": "heal"}, "wrapped by kl-anchor 'heal'; choose one of lora, full, smf"),
                         ({"method": "replay", "ratio": 0}, "ratio must be in"),
                         ({"method": "kl-anchor", "kl_weight": -1}, "kl_weight must be > 0"),
                         ({"method": "replay", "of": "smf", "top_t": 0}, "top_t must be a positive number"),
                         ({"method": "replay", "general": "missing.jsonl"}, "missing.jsonl: file not found"),
                         ({"method": "kl-anchor", "general": "medmcqa"}, "medmcqa")):
        with pytest.raises(SmfError, match=message):
            TrainConfig.from_dict(raw)


def _docs(tmp_path) -> Path:
    path = tmp_path / "general.jsonl"
    path.write_text("".join(json.dumps({"text": f"Section {i}. The module reads files and writes records; " * 12}) + "\n" for i in range(8)))
    return path


@pytest.mark.parametrize("method, of, extra, key", [("replay", "lora", ["--ratio", "0.5"], "replay_loss"),
                                                    ("kl-anchor", "full", ["--kl-windows", "2"], "kl_anchor")])
def test_baseline_through_smf_train(method, of, extra, key, tiny_folder, tmp_path, monkeypatch):
    """Through `smf train`: the term is logged at every step with the windows the ratio asks for, and the
    model trains as the wrapped method saves it (an adapter for LoRA, every weight for full)."""
    from smf.models import load_model

    sizes = []
    real = InTurn.batch
    monkeypatch.setattr(InTurn, "batch", lambda self, step, device: sizes.append(self.per_step) or real(self, step, device))
    out = tmp_path / "run"
    argv = ["train", "--model", str(tiny_folder), "--method", method, "--of", of, "--general", str(_docs(tmp_path)), *extra,
            "--data", "facts:n_facts=20,n_control=8", "--steps", "2", "--batch-size", "4", "--max-length", "32", "--out", str(out)]
    assert main(argv) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if key in r] == [1, 2] and all(math.isfinite(r[key]) for r in log if "loss" in r)
    assert log[-1][key] > 1e-6  # after a step the model is no longer its start: KL to the start is not 0
    assert sizes == [2, 2]  # ratio 0.5 of 4 examples; kl_windows 2
    assert json.loads((out / "train_config.json").read_text())["of"] == of
    assert (out / "model" / "adapter_config.json").is_file() == (of == "lora")
    before, _ = load_model(tiny_folder)
    after, _ = load_model(out / "model")
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))


def test_replay_moves_the_model_otherwise_than_its_method_alone(tiny_folder, tmp_path):
    """The general windows reach the gradient: replay of full and full alone, same data and seed, end apart."""
    from smf.models import load_model

    docs = _docs(tmp_path)
    common = ["--model", str(tiny_folder), "--data", "facts:n_facts=20,n_control=8", "--steps", "2", "--batch-size", "4",
              "--max-length", "32", "--lr", "1e-3"]
    assert main(["train", *common, "--method", "full", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *common, "--method", "replay", "--of", "full", "--general", str(docs), "--out", str(tmp_path / "b")]) == 0
    a, _ = load_model(tmp_path / "a" / "model")
    b, _ = load_model(tmp_path / "b" / "model")
    assert not torch.equal(a.model.norm.weight, b.model.norm.weight)


@pytest.mark.parametrize("method, key", [("replay", "replay_loss"), ("kl-anchor", "kl_anchor")])
def test_a_baseline_of_smf_trains_only_the_rows_the_examples_chose(method, key, tmp_path, tokenizer):
    """With SMF the general windows run after the step's reads are counted: they choose no rows, and the rows
    that change are those the examples' steps selected. kl-anchor's base is the model with its memory reading
    zeros: KL 0 at the first step, above 0 once rows have moved."""
    from conftest import memory_folder
    from smf.data.sources import training_examples
    from smf.memory import MemoryConfig
    from smf.memory.retrofit import memory_layers
    from smf.models import load_model
    from smf.train import train

    folder = memory_folder(tmp_path / "mem", tokenizer, MemoryConfig(layers=[1, 2], slots=256, heads=2, topk=4, key_dim=16))
    model, tok = load_model(folder)
    config = TrainConfig.from_dict({"method": method, "of": "smf", "general": str(_docs(tmp_path)), "top_t": 8, "steps": 2,
                                    "batch_size": 4, "max_length": 32, "ratio": 1.0} if method == "replay" else
                                   {"method": method, "of": "smf", "general": str(_docs(tmp_path)), "top_t": 8, "steps": 2,
                                    "batch_size": 4, "max_length": 32})
    result = train(model, tok, training_examples("facts:n_facts=20,n_control=8"), config, tmp_path / "run", model_dir=folder, progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if "loss" in line]
    assert all(r["rows_selected"] <= 2 * 8 for r in log) and log[-1][key] > 1e-6
    if method == "kl-anchor":
        assert log[0][key] == pytest.approx(0.0, abs=1e-6)
    start, _ = load_model(folder)
    for i, memory in memory_layers(result.model).items():
        changed = (memory.values != memory_layers(start)[i].values).any(-1).nonzero().flatten()
        assert 0 < len(changed) <= 2 * 8  # at most t rows a step, two steps


def _study(tiny_folder, tmp_path, methods: dict) -> Path:
    from test_study import shrink

    raw = shrink(read_config(ROOT / "configs" / "offline.yaml"), tiny_folder)
    raw["methods"] = methods
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.slow
def test_baselines_through_a_study(tiny_folder, tmp_path):
    general = str(_docs(tmp_path))
    path = _study(tiny_folder, tmp_path, {"replay-full": {"general": general, "ratio": [0.25, 0.5]},
                                          "kl-anchor-lora": {"general": general, "kl_windows": 2}, "replay-smf": {"general": general}})
    assert main(["compare", "--config", str(path), "--out", str(tmp_path / "s")]) == 0
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert [r["label"] for r in results["summary"]] == ["replay-full ratio=0.25", "replay-full ratio=0.5", "kl-anchor-lora", "replay-smf"]
    assert {r["family"] for r in results["runs"]} == {"replay-full", "kl-anchor-lora", "replay-smf"}
    report = (tmp_path / "s" / "report.md").read_text()
    assert "| kl-anchor-lora |" in report and "replay-smf" in report


def test_a_studys_general_text_may_not_be_a_probes_source(tiny_folder, tmp_path, capsys):
    raw = read_config(ROOT / "studies" / "sweep" / "config.yaml")
    raw["methods"] = {"replay-full": {"general": "pydoc"}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**raw, "model": str(tiny_folder)}, sort_keys=False))
    assert main(["compare", "--config", str(path), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "the evaluation probe pydoc is drawn from" in err and "replay-full" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
@pytest.mark.parametrize("label, settings, compact", [("kl-anchor-lora", {"kl_windows": 2}, True), ("replay-full", {"ratio": 0.5}, False)])
def test_a_baseline_through_a_stream(label, settings, compact, tiny_folder, tmp_path):
    """Each chunk continues from the last; what is kept follows the wrapped method: every LoRA adapter, only the
    latest whole model of full finetuning."""
    from test_stream import stream_raw

    from smf.study.config import StudyConfig
    from smf.study.runner import run_study

    raw = stream_raw(tiny_folder, chunks=2)
    raw.update(methods={label: {"general": str(_docs(tmp_path)), **settings}}, train={**raw["train"], "steps": 1})
    raw["evaluation"] = {"task": raw["evaluation"]["task"], "probes": raw["evaluation"]["probes"]}
    results = run_study(StudyConfig.from_dict(raw), tmp_path / "s", progress=False)
    assert [r["label"] for r in results["summary"]] == [label] and len(results["runs"][0]["matrix"]) == 2
    run = tmp_path / "s" / "runs" / label / "seed0"
    assert (run / "chunk1" / "model").is_dir() == compact and (run / "chunk2" / "model").is_dir()
    assert (run / "chunk2" / "model" / "adapter_config.json").is_file() == compact
