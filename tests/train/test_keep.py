"""Kept outputs (smf.train.keep, `smf learn --keep`): a KL term to the model's own answers before training."""

import typing

import pytest
import torch

from smf.cli import main
from smf.data.types import TrainExample
from smf.memory import load_retrofitted, memory_layers, memory_reading_zeros
from smf.optim import SparseRowOptimizer
from smf.train import TrainConfig, train
from smf.data.batching import collate
from smf.methods.terms import target_logprobs
from smf.train.keep import Keep
from test_anchors import learn_args
from test_train import examples, smf_folder  # noqa: F401  (fixtures)

KEPT = [TrainExample("Question: what follows gamma delta?\nAnswer:", " zeta eta theta"),
        TrainExample("Question: what follows mu alpha?\nAnswer:", " beta")]


def config(steps=3):
    return TrainConfig.from_dict({"method": "smf", "rule": "tfidf", "top_t": 6, "lr": 0.5, "steps": steps, "batch_size": 4,
                                  "max_length": 48, "optimizer": "sgd"})


def kl_now(model, keep: Keep, pad: int) -> float:
    """Mean KL(reference ‖ model) over the kept positions, computed here directly."""
    total = 0.0
    with torch.no_grad():
        for chunk, ref in zip(keep.chunks, keep.reference):
            logp = target_logprobs(model, collate(chunk, pad))
            p = ref.float().exp()
            total += float((p * (ref.float() - logp)).sum())
    return total / keep.positions


def test_the_reference_is_the_models_distribution_at_the_answers_positions(smf_folder, tokenizer):  # noqa: F811
    model = load_retrofitted(smf_folder)
    keep = Keep.of(model, tokenizer, KEPT, 48, batch=1)
    answer_tokens = [len(tokenizer(e.target, add_special_tokens=False).input_ids) for e in KEPT]
    assert [len(r) for r in keep.reference] == answer_tokens and keep.positions == sum(answer_tokens)
    assert keep.reference[0].shape[1] == model.config.vocab_size and keep.reference[0].dtype == torch.float16
    assert torch.allclose(keep.reference[0].float().exp().sum(-1), torch.ones(answer_tokens[0]), atol=2e-2)
    assert kl_now(model, keep, tokenizer.pad_token_id) < 1e-4  # unchanged model: nothing to pay
    with torch.no_grad():  # a changed memory moves the kept answers
        for memory in memory_layers(model).values():
            memory.values.normal_(0, 5.0)
    assert kl_now(model, keep, tokenizer.pad_token_id) > 1e-2


def test_keep_adds_its_gradient_to_the_chosen_rows_and_chooses_none(smf_folder, tokenizer, tmp_path, monkeypatch):  # noqa: F811
    """With a kept term the first step selects the same rows (the kept answers' reads are not counted), the update
    on them differs, the rows not chosen stay bit-identical, and the log holds the term."""
    chosen: list = []
    original = SparseRowOptimizer.set_rows
    monkeypatch.setattr(SparseRowOptimizer, "set_rows", lambda self, rows, valid=None: chosen.append(
        [r[valid[p]] if valid else r.clone() for p, r in rows.items()]) or original(self, rows, valid))

    def run(name, keep_weight):
        model = load_retrofitted(smf_folder)
        before = {i: m.values.detach().clone() for i, m in memory_layers(model).items()}
        keep = Keep.of(model, tokenizer, KEPT, 48, weight=keep_weight) if keep_weight else None
        result = train(model, tokenizer, examples(), config(), tmp_path / name, model_dir=smf_folder, progress=False,
                       save_model=False, terms=[keep] if keep else [])
        return before, {i: m.values.detach().clone() for i, m in memory_layers(result.model).items()}, result, keep

    _, plain, plain_result, _ = run("plain", 0)
    plain_rows = list(chosen)
    chosen.clear()
    before, kept, kept_result, keep = run("kept", 1000.0)
    assert len(chosen) == len(plain_rows) == 3
    # the first step reads the same (later ones read through memory the term changed): the same rows chosen
    assert all(torch.equal(x, y) for x, y in zip(plain_rows[0], chosen[0]))
    assert any(not torch.equal(plain[i], kept[i]) for i in plain)  # but the keep term moved them differently
    for i in kept:
        rows = torch.cat([step[list(kept).index(i)] for step in chosen]).unique()
        untouched = torch.ones(len(kept[i]), dtype=torch.bool)
        untouched[rows] = False
        assert torch.equal(kept[i][untouched], before[i][untouched])
    logged = [r["keep_kl"] for r in kept_result.log if "loss" in r]
    assert len(logged) == 3 and logged[0] < 1e-4 and all("keep_kl" not in r for r in plain_result.log)


@pytest.mark.slow
def test_keeping_holds_the_kept_answers_closer_than_training_without(smf_folder, tokenizer, tmp_path):  # noqa: F811
    kl = {}
    for weight in (0, 100.0):
        model = load_retrofitted(smf_folder)
        keep = Keep.of(model, tokenizer, KEPT, 48, weight=weight or 1.0)
        result = train(model, tokenizer, examples(), config(steps=12), tmp_path / f"w{weight}", model_dir=smf_folder,
                       progress=False, save_model=False, terms=[keep] if weight else [])
        kl[weight] = kl_now(result.model, keep, tokenizer.pad_token_id)
    assert kl[100.0] < 0.5 * kl[0] and kl[0] > 1e-3  # measured: 0.00025 against 0.0022


@pytest.mark.slow
def test_learn_keep_builds_the_term_from_anchors_and_refuses_a_bad_weight(tiny_folder, tmp_path, capsys, monkeypatch):
    from smf.use.learn import sitting

    seen = []
    real = sitting.train
    monkeypatch.setattr(sitting, "train", lambda *a, **k: seen.append((k["terms"] or [None])[0]) or real(*a, **k))
    common = learn_args(tiny_folder, tmp_path)
    assert main(["learn", *common, "--out", str(tmp_path / "kept"), "--keep", "2", "--keep-weight", "5"]) == 0
    out = capsys.readouterr().out
    assert "keeping the base model's (its memory reading zeros) answers to 4 question(s) about made-up subjects" in out
    assert "weight 5" in out
    assert isinstance(seen[-1], Keep) and sum(len(c) for c in seen[-1].chunks) == 4 and seen[-1].weight == 5.0
    assert main(["learn", *common, "--out", str(tmp_path / "general"), "--keep-general", "3", "--keep", "0", "--anchors", "0"]) == 0
    out = capsys.readouterr().out
    assert "answers to 3 general question(s) (such as \"What does" in out and "made-up" not in out
    assert sum(len(c) for c in seen[-1].chunks) == 3
    assert main(["learn", *common, "--out", str(tmp_path / "default")]) == 0  # the default keeps no answers
    assert seen[-1] is None and "keeping" not in capsys.readouterr().out
    assert main(["learn", *common, "--out", str(tmp_path / "one"), "--keep", "1"]) == 0  # one anchor per question
    assert sum(len(c) for c in seen[-1].chunks) == 2 and seen[-1].weight == 3.0
    assert seen[-1].per_step == 32  # at most 64 kept answers a step, in batches of --batch-size 2
    steps, backward = [], Keep.backward
    monkeypatch.setattr(Keep, "backward", lambda self, *a, **k: steps.append(self.at(a[1] if len(a) > 1 else k.get("step", 0))) or backward(self, *a, **k))
    assert main(["learn", *common, "--out", str(tmp_path / "capped"), "--keep", "3", "--keep-per-step", "2", "--steps", "4"]) == 0
    assert seen[-1].per_step == 1 and len(seen[-1].chunks) == 3 and "2 a step in turn" in capsys.readouterr().out
    assert steps == [[0], [1], [2], [0]]  # the loop hands each step its index
    assert main(["learn", *common, "--out", str(tmp_path / "both"), "--keep", "1", "--keep-divergence", "symmetric", "--steps", "1"]) == 0
    assert seen[-1].divergence == "symmetric" and "weight 3, symmetric KL" in capsys.readouterr().out
    for flag, value, message in [("--keep-weight", "0", "keep_weight must be > 0"), ("--keep", "-1", "keep must be >= 0"),
                                 ("--keep-general", "-2", "keep_general must be >= 0"),
                                 ("--keep-from", "later", "keep_from: unknown choice 'later'; choose one of base, start"),
                                 ("--keep-per-step", "-1", "keep_per_step must be >= 0"),
                                 ("--study-wordings", "4", "study_wordings must be 0 to 3"),
                                 ("--keep-divergence", "reverse", "keep_divergence: unknown choice 'reverse'; choose one of forward, symmetric")]:
        assert main(["learn", *common, "--out", str(tmp_path / "bad"), "--keep", "1", flag, value]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("divergence", ["forward", "symmetric"])
def test_the_term_the_loop_adds_is_the_weighted_mean_kl(smf_folder, tokenizer, divergence):  # noqa: F811
    """Keep.backward's gradient is weight × the gradient of the mean KL computed directly (symmetric: both ways)."""
    weight = 0.5
    model = load_retrofitted(smf_folder)
    keep = Keep.of(model, tokenizer, KEPT, 48, weight=weight, divergence=divergence)
    memory = next(iter(memory_layers(model).values()))
    with torch.no_grad():
        memory.values.normal_(0, 1.0)
    memory.sparse_grad = False
    memory.values.requires_grad_(True)
    mean = keep.backward(model, device="cpu", backward=lambda loss: loss.backward())
    got = memory.values.grad.clone()
    memory.values.grad = None
    total = 0.0
    for chunk, ref in zip(keep.chunks, keep.reference):
        logp = target_logprobs(model, collate(chunk, tokenizer.pad_token_id))
        total = total + (ref.float().exp() * (ref.float() - logp)).sum()
        if divergence == "symmetric":
            total = total + (logp.exp() * (logp - ref.float())).sum()
    (total / keep.positions).backward()
    assert mean == pytest.approx(float(total.detach()) / keep.positions, rel=1e-5)
    assert torch.allclose(got, weight * memory.values.grad, atol=1e-6 * float(memory.values.grad.abs().max()))


def test_a_capped_term_takes_the_chunks_in_turn_and_is_their_mean_kl(smf_folder, tokenizer):  # noqa: F811
    """Keep.of(most=...): each step's term is the mean KL over that step's chunks only, and every chunk comes in turn."""
    model = load_retrofitted(smf_folder)
    kept = [TrainExample(f"Question: what follows {a} {b}?\nAnswer:", f" {c}") for a, b, c in
            [("alpha", "beta", "gamma"), ("beta", "gamma", "delta"), ("mu", "nu", "xi"), ("rho", "sigma", "tau"),
             ("phi", "chi", "psi")]]
    assert Keep.of(model, tokenizer, kept, 48, batch=1).per_step == 0  # uncapped: all five every step
    assert Keep.of(model, tokenizer, kept, 48, batch=2, most=3).per_step == 1  # whole chunks: 3 // 2
    assert Keep.of(model, tokenizer, kept, 48, batch=4, most=1).per_step == 1  # at least one
    keep = Keep.of(model, tokenizer, kept, 48, weight=2.0, batch=1, most=2)
    assert [keep.at(s) for s in range(5)] == [[0, 1], [2, 3], [4, 0], [1, 2], [3, 4]]  # each twice in five steps
    assert Keep.of(model, tokenizer, kept, 48, batch=1, most=5).at(3) == [0, 1, 2, 3, 4]
    memory = next(iter(memory_layers(model).values()))
    with torch.no_grad():
        memory.values.normal_(0, 1.0)
    memory.sparse_grad = False
    memory.values.requires_grad_(True)
    mean = keep.backward(model, 2, device="cpu", backward=lambda loss: loss.backward())
    got = memory.values.grad.clone()
    memory.values.grad = None
    total, n = 0.0, 0
    for i in (4, 0):
        logp = target_logprobs(model, collate(keep.chunks[i], tokenizer.pad_token_id))
        total = total + (keep.reference[i].float().exp() * (keep.reference[i].float() - logp)).sum()
        n += len(keep.reference[i])
    (total / n).backward()
    assert mean == pytest.approx(float(total.detach()) / n, rel=1e-5)
    assert torch.allclose(got, 2.0 * memory.values.grad, atol=1e-6 * float(memory.values.grad.abs().max()))


def test_memory_reading_zeros_gives_the_pretrained_logits_and_restores_the_values(tiny_folder, tmp_path):
    from smf.errors import SmfError
    from smf.memory import MemoryConfig, retrofit
    from smf.models import load_model

    ids = torch.tensor([[5, 17, 300, 42, 9, 1000]])
    base, _ = load_model(tiny_folder)
    with torch.no_grad():
        expected = base(ids).logits
    model = retrofit(load_model(tiny_folder)[0], MemoryConfig(layers=(3, 10), slots=64, heads=2, topk=4, key_dim=16))
    with torch.no_grad():
        for memory in memory_layers(model).values():
            memory.values.normal_(0, 3.0)
        trained = {i: m.values.clone() for i, m in memory_layers(model).items()}
        moved = model(ids).logits
        with memory_reading_zeros(model) as zeroed:
            inside = zeroed(ids).logits
        after = model(ids).logits
    assert not torch.allclose(moved, expected, atol=1e-3)  # the memory changes the outputs
    assert torch.allclose(inside, expected, atol=1e-6)  # reading zeros, the model is the pretrained one
    assert all(torch.equal(m.values, trained[i]) for i, m in memory_layers(model).items()) and torch.equal(after, moved)
    replacing = retrofit(load_model(tiny_folder)[0], MemoryConfig(layers=(3,), slots=64, heads=2, topk=4, key_dim=16, mode="replacement"))
    with pytest.raises(SmfError, match="--keep-from start"), memory_reading_zeros(replacing):
        pass


@pytest.mark.slow
def test_a_later_sitting_keeps_the_base_models_answers_and_the_earlier_ones(tiny_folder, tmp_path, monkeypatch):
    """--keep-from base (the default): the first sitting saves its kept answers with the model; the second keeps them
    and its own, with the pretrained model's distributions as the reference. --keep-from start keeps this sitting's
    answers only, with the distributions of the model the sitting starts from."""
    import json

    from smf.models import load_model
    from smf.names import KEPT_FILE
    from smf.use.learn import sitting
    from smf.use.learn.folder import read_kept

    seen, built = [], []
    real, real_of = sitting.train, Keep.of.__func__
    monkeypatch.setattr(sitting, "train", lambda *a, **k: seen.append((k["terms"] or [None])[0]) or real(*a, **k))
    monkeypatch.setattr(Keep, "of", classmethod(lambda cls, model, tok, kept, *a, **k: built.append(list(kept)) or real_of(cls, model, tok, kept, *a, **k)))
    common = learn_args(tiny_folder, tmp_path)
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    assert main(["learn", *common, "--out", str(first), "--keep", "1"]) == 0
    kept_first = read_kept(first)
    assert kept_first == built[-1] and len(kept_first) == 2  # the two questions with a subject, one anchor each
    more = tmp_path / "more.jsonl"
    more.write_text("".join(json.dumps(r) + "\n" for r in [{"question": "Who painted the Velmor bridge?", "answer": "Ana Roy"},
                                                            {"question": "Which river runs through Drava?", "answer": "the Tesk"}]))
    later = ["--data", str(more), "--model", str(first), *common[4:]]
    tokenizer = load_model(tiny_folder)[1]

    def reference(folder, kept):
        return real_of(Keep, load_model(folder)[0], tokenizer, kept, 48, batch=2).reference

    def same(a, b):
        return len(a) == len(b) and all(torch.allclose(x.float(), y.float(), atol=1e-3) for x, y in zip(a, b))

    assert main(["learn", *later, "--out", str(second), "--keep", "1"]) == 0
    kept = built[-1]
    assert kept[:2] == kept_first and len(kept) == 4 and read_kept(second) == kept
    assert same(seen[-1].reference, reference(tiny_folder, kept))  # the pretrained model's distributions
    assert not same(reference(first, kept), reference(tiny_folder, kept))  # which the first sitting moved
    assert main(["learn", *later, "--out", str(third), "--keep", "1", "--keep-from", "start"]) == 0
    kept = built[-1]
    assert len(kept) == 2 and kept[0] not in kept_first and same(seen[-1].reference, reference(first, kept))
    assert read_kept(third)[:2] == kept_first  # the earlier answers still travel with the model
    assert main(["learn", *later, "--out", str(tmp_path / "fourth"), "--keep", "0"]) == 0  # without: the file is carried on
    assert (tmp_path / "fourth" / KEPT_FILE).read_text() == (first / KEPT_FILE).read_text()
    again = ["--data", common[1], "--model", str(first), *common[4:]]  # the first sitting's facts again: the same anchors
    assert main(["learn", *again, "--out", str(tmp_path / "again"), "--keep", "1"]) == 0
    assert built[-1] == kept_first and read_kept(tmp_path / "again") == kept_first  # each kept once



DAMAGED = [('{"prompt": "Q", "target": "A"}\n{"prompt": "Q2", "tar', "line 2: not valid JSON"),
           ('{"prompt": "Q", "target": "A"}\n{"prompt": "Q2"}\n', "line 2: not a"),
           ('{"prompt": "Q", "target": 7}\n', "line 1: not a"),
           ('{"prompt": "Q", "target": ""}\n', "line 1: not a"),
           ('["Q", "A"]\n', "line 1: not a"),
           ("\n", "no rows"),
           (b"\xff\xfe", "not UTF-8")]


@pytest.mark.slow
def test_a_damaged_kept_answers_file_stops_the_next_sitting_with_one_line(tiny_folder, tmp_path, capsys):
    import shutil

    from smf.names import KEPT_FILE

    common = learn_args(tiny_folder, tmp_path)
    first = tmp_path / "first"
    assert main(["learn", *common, "--out", str(first), "--keep", "1"]) == 0
    for n, (text, why) in enumerate(DAMAGED):
        model, out = tmp_path / f"model{n}", tmp_path / f"second{n}"
        shutil.copytree(first, model)
        kept = model / KEPT_FILE
        kept.write_bytes(text if isinstance(text, bytes) else text.encode())
        later = ["learn", "--data", common[1], "--model", str(model), *common[4:], "--out", str(out), "--keep", "1"]
        capsys.readouterr()
        assert main(later) == 2, why
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{kept} is damaged ({why}" in err and "delete it" in err, err
        assert not out.exists() and not any(p.name.startswith(f".{out.name}") for p in tmp_path.iterdir())
    kept.unlink()  # the fix the message names
    assert main(later) == 0 and (out / KEPT_FILE).is_file()


def test_the_symmetric_term_also_charges_mass_moved_onto_tokens_the_reference_found_unlikely(smf_folder, tokenizer):  # noqa: F811
    """Both ways, the term is the forward KL plus KL(model ‖ reference): larger once the model moves, zero before;
    the config names the same divergences, and Keep.of refuses another."""
    from smf.errors import SmfError
    from smf.train import keep as keep_module
    from smf.use.learn import LearnConfig

    assert typing.get_args(typing.get_type_hints(LearnConfig)["keep_divergence"]) == keep_module.DIVERGENCES
    model = load_retrofitted(smf_folder)
    forward = Keep.of(model, tokenizer, KEPT, 48, batch=1)
    both = Keep.of(model, tokenizer, KEPT, 48, batch=1, divergence="symmetric")
    ignore = lambda loss: None  # noqa: E731
    assert both.backward(model, device="cpu", backward=ignore) < 1e-4
    with torch.no_grad():
        for memory in memory_layers(model).values():
            memory.values.normal_(0, 5.0)
    one = forward.backward(model, device="cpu", backward=ignore)
    two = both.backward(model, device="cpu", backward=ignore)
    assert one == pytest.approx(kl_now(model, forward, tokenizer.pad_token_id), rel=1e-5) and two > one + 1e-3
    with pytest.raises(SmfError, match="keep divergence must be one of forward, symmetric, got 'reverse'"):
        Keep.of(model, tokenizer, KEPT, 48, divergence="reverse")
