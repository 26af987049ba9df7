"""The product-key memory layer and the retrofit (tiny random models; one real-model test)."""

import pytest
import torch

from conftest import tiny_model
from smf.errors import SmfError
from smf.memory import MemoryConfig, ProductKeyMemory, load_retrofitted, memory_layers, retrofit, save_retrofitted, set_recording

SMALL = dict(layers=(1, 3), slots=64, heads=2, topk=4, key_dim=16)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_additive_retrofit_keeps_logits(kind):
    model = tiny_model(kind)
    ids = torch.randint(3, 96, (2, 12))
    with torch.no_grad():
        before = model(ids).logits
        retrofit(model, MemoryConfig(**SMALL))
        after = model(ids).logits
    assert len(memory_layers(model)) == 2
    assert (after - before).abs().max().item() <= 1e-5


def test_lookup_equals_brute_force_top_k():
    """Product keys find the same top-k rows as scoring all N = sqrt(N)² rows."""
    torch.manual_seed(1)
    cfg = MemoryConfig(layers=(0,), slots=256, heads=3, topk=8, key_dim=12, value_init="normal")
    mem = ProductKeyMemory(20, cfg)
    mem.reset_parameters(torch.Generator().manual_seed(0))
    xn = mem.normalize(torch.randn(7, 20))
    rows, weights = mem.lookup(xn)
    q = mem.q_proj(xn).view(7, 3, 2, 6)
    s1 = torch.einsum("nhd,hmd->nhm", q[:, :, 0], mem.keys[:, 0])  # (n, H, 16)
    s2 = torch.einsum("nhd,hmd->nhm", q[:, :, 1], mem.keys[:, 1])
    full = (s1[..., :, None] + s2[..., None, :]).flatten(2)  # (n, H, 256), row = i*16 + j
    best, idx = full.topk(8, dim=-1)
    assert torch.equal(rows.sort(-1).values, idx.sort(-1).values)
    torch.testing.assert_close(weights, best.softmax(-1))
    torch.testing.assert_close(weights.sum(-1), torch.ones(7, 3))


def test_value_gradient_is_sparse_and_only_on_rows_read():
    model = retrofit(tiny_model(), MemoryConfig(**SMALL))
    set_recording(model, True)
    ids = torch.randint(3, 96, (2, 10))
    model(ids).logits.square().mean().backward()  # every position carries loss
    for memory in memory_layers(model).values():
        grad = memory.values.grad
        assert grad is not None and grad.is_sparse
        grad = grad.coalesce()
        touched = set(grad.indices()[0].tolist())
        read = set(memory.last_rows.flatten().tolist())
        assert touched == read
        assert len(read) < memory.slots
        assert grad.values().abs().sum(-1).gt(0).all(), "every row read gets a non-zero gradient at zero init"


def test_padding_records_no_accesses():
    model = retrofit(tiny_model(), MemoryConfig(**SMALL))
    set_recording(model, True)
    a, b = torch.randint(3, 96, (1, 9)), torch.randint(3, 96, (1, 5))
    alone = {}
    for seq in (a, b):
        with torch.no_grad():
            model(seq, attention_mask=torch.ones_like(seq))
        for i, memory in memory_layers(model).items():
            alone.setdefault(i, []).append(memory.last_rows)
    for side in ("right", "left"):
        pad = torch.zeros(1, 4, dtype=torch.long)
        b_padded = torch.cat([b, pad], 1) if side == "right" else torch.cat([pad, b], 1)
        mask_b = (torch.arange(9) < 5) if side == "right" else (torch.arange(9) >= 4)
        ids = torch.cat([a, b_padded])
        mask = torch.stack([torch.ones(9, dtype=torch.bool), mask_b]).long()
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            model(ids, attention_mask=mask, position_ids=position_ids)
        for i, memory in memory_layers(model).items():
            assert memory.last_rows.shape[0] == 14
            assert torch.equal(memory.last_rows, torch.cat(alone[i])), side


def test_recording_off_keeps_nothing():
    model = retrofit(tiny_model(), MemoryConfig(**SMALL))
    model(torch.randint(3, 96, (1, 6)))
    assert all(m.last_rows is None for m in memory_layers(model).values())


def test_save_load_identical_logits(tmp_path):
    model = retrofit(tiny_model("qwen2"), MemoryConfig(**SMALL))
    with torch.no_grad():  # give the memory something to say
        for memory in memory_layers(model).values():
            memory.values.normal_()
    ids = torch.randint(3, 96, (2, 8))
    save_retrofitted(model, None, tmp_path / "m")
    loaded = load_retrofitted(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded.lm_head.weight is loaded.get_input_embeddings().weight
    assert loaded.smf_memory_config == model.smf_memory_config


def test_replacement_mode_drops_ffn():
    base = tiny_model()
    n_base = sum(p.numel() for p in base.parameters())
    model = retrofit(base, MemoryConfig(**SMALL, mode="replacement"))
    blocks = model.get_decoder().layers
    assert blocks[1].mlp.ffn is None and blocks[0].mlp.__class__.__name__ != "MemoryMLP"
    memories = memory_layers(model)
    assert all(m.values.abs().sum() > 0 for m in memories.values()), "replacement values start non-zero"
    n_mem = sum(p.numel() for m in memories.values() for p in m.parameters())
    n_ffn = 2 * 3 * 48 * 96
    assert sum(p.numel() for p in model.parameters()) == n_base - n_ffn + n_mem
    model(torch.randint(3, 96, (1, 5)))


def test_retrofit_is_deterministic_and_leaves_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    a = retrofit(tiny_model(), MemoryConfig(**SMALL, seed=7))
    torch.manual_seed(123)
    b = retrofit(tiny_model(), MemoryConfig(**SMALL, seed=7))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    torch.manual_seed(123)
    retrofit(tiny_model(seed=123), MemoryConfig(**SMALL))
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(slots=1000), "perfect square"),
        (dict(topk=9), "top-k"),
        (dict(key_dim=15), "even"),
        (dict(layers=()), "at least one"),
        (dict(layers=(1, 1)), "repeat"),
        (dict(mode="sideways"), "mode"),
    ],
)
def test_config_rejects_bad_values(change, message):
    with pytest.raises(SmfError, match=message):
        MemoryConfig(**{**SMALL, **change})


def test_config_rejects_layer_out_of_range():
    with pytest.raises(SmfError, match="layer index 4 does not exist: the model has 4 layers"):
        retrofit(tiny_model(), MemoryConfig(**{**SMALL, "layers": (1, 4)}))


def test_config_round_trip_and_unknown_key():
    cfg = MemoryConfig(**SMALL)
    assert MemoryConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(SmfError, match="unknown key 'slotz'; did you mean 'slots'"):
        MemoryConfig.from_dict({**cfg.to_dict(), "slotz": 4})


def test_twice_retrofitted_is_refused():
    model = retrofit(tiny_model(), MemoryConfig(**SMALL))
    with pytest.raises(SmfError, match="already has memory"):
        retrofit(model, MemoryConfig(**SMALL))


@pytest.mark.slow
def test_additive_retrofit_keeps_logits_of_default_model(default_model):
    import copy

    model, tokenizer = default_model
    model = copy.deepcopy(model)
    batch = tokenizer(["The capital of France is", "Sparse memory finetuning updates few rows."], return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**batch).logits
        retrofit(model, MemoryConfig(layers=(8, 14, 20), slots=16384, heads=4, topk=16, key_dim=256))
        after = model(**batch).logits
    assert (after - before).abs().max().item() <= 1e-5


def test_factored_gradient_equals_the_sparse_one_on_the_rows_chosen(monkeypatch):
    """factored_grad: V.grad stays None, `selected_grad(rows)` is the sparse gradient's rows, summed
    over two backward passes (micro-batches), and the gradient below the memory is unchanged
    (gathered one token at a time here: a chunk smaller than a token's reads)."""
    from smf.memory import layer

    monkeypatch.setattr(layer._FactoredRead, "CHUNK", 1)
    grads = {}
    for factored in (False, True):
        model = retrofit(tiny_model(), MemoryConfig(**SMALL))
        model.requires_grad_(False)
        memories = memory_layers(model)
        for memory in memories.values():
            memory.values.requires_grad_(True)
            memory.factored_grad = factored
        embeds = model.get_input_embeddings()
        embeds.weight.requires_grad_(True)  # the gradient below every memory: it flows through the reads' weights
        torch.manual_seed(1)
        for _ in range(2):
            with torch.no_grad():
                for memory in memories.values():
                    memory.values.normal_()  # non-zero values: the weights' gradient is not zero
            model(torch.randint(3, 96, (2, 10))).logits.square().mean().backward()
        grads[factored] = (embeds.weight.grad.clone(), {i: m.values.grad for i, m in memories.items()}, memories)
    (embed_sparse, sparse, _), (embed_factored, none, memories) = grads[False], grads[True]
    torch.testing.assert_close(embed_factored, embed_sparse, rtol=1e-5, atol=1e-7)
    for i, memory in memories.items():
        assert none[i] is None and len(memory.grad_parts) == 2
        full = sparse[i].coalesce()
        rows = full.indices()[0]
        chosen = torch.cat([rows[::3], torch.tensor([memory.slots - 1])]).unique()  # some rows read, one perhaps not
        expected = torch.zeros(len(chosen), memory.value_dim)
        at = torch.isin(rows, chosen)
        expected[torch.searchsorted(chosen, rows[at])] = full.values()[at]
        torch.testing.assert_close(memory.selected_grad(chosen), expected, rtol=1e-5, atol=1e-7)
