"""The published study's memory layer (MemoryConfig variant: published), against the published code's output.

`tests/fixtures/recipe/memory_layer*.{json,safetensors}` (README: section 4): for the study's tiny
checkpoint and fixed inputs, the layer's output, the rows each head reads (best first) with their raw
scores, the layer-1 MLP with its memory (base + 0.01 · memory) and the whole model's logits. smf's own
layer stays the default and an exact no-op at the start.
"""

import math

import pytest
import torch

from recipe_model import io, recipe_json, study_memory_config, study_model, tiny_qwen2
from smf.errors import SmfError
from smf.memory import MemoryConfig, load_published_memory, memory_layers, memory_reading_zeros, retrofit
from smf.memory.layer import ProductKeyMemory

TOL = 1e-6


@pytest.fixture(scope="module")
def model():
    return study_model()


def unscaled(memory, x):
    """The memory's read without its output scale (the published layer's own output)."""
    scale, memory.scale = memory.scale, None
    try:
        return memory(x)
    finally:
        memory.scale = scale


def test_the_layer_reads_the_rows_the_published_layer_reads(model):
    ref = io()
    memory = model.model.layers[1].mlp.memory
    x = ref["x"]
    with torch.no_grad():
        rows, scores = memory.scored_lookup(memory.normalize(x.reshape(-1, x.shape[-1])))
        query = memory.q_proj(x.reshape(-1, x.shape[-1])).reshape(-1, memory.heads, 2 * memory.half)
    assert torch.equal(rows, ref["last_indices"])  # order inside a head: best first
    assert (scores - ref["last_scores"]).abs().max() <= TOL
    assert (query.reshape(-1, 2 * memory.half) - ref["query"]).abs().max() <= TOL
    weights = scores.softmax(-1).reshape(len(rows), -1)
    assert (weights - ref["bag_weights"]).abs().max() <= TOL
    assert torch.equal(rows.reshape(len(rows), -1), ref["bag_indices"])


def test_the_layer_and_its_mlp_give_the_published_outputs(model):
    ref = io()
    block = model.model.layers[1].mlp
    with torch.no_grad():
        out = unscaled(block.memory, ref["x"])
        mlp = block(ref["x"])
        base = block.ffn(ref["x"])
    assert (out - ref["memory_out"]).abs().max() <= TOL
    assert (base - ref["base_mlp_out"]).abs().max() <= TOL
    assert (mlp - ref["additive_mlp_out"]).abs().max() <= TOL
    assert float(block.memory.scale.detach()) == recipe_json("memory_layer.json")["tiny"]["memory_scale"]


def test_train_mode_reads_as_eval_mode(model):
    ref = io()
    memory = model.model.layers[1].mlp.memory
    memory.train()
    try:
        with torch.no_grad():
            assert (unscaled(memory, ref["x"]) - ref["memory_out"]).abs().max() <= TOL
    finally:
        memory.eval()


def test_the_model_gives_the_published_logits(model):
    ref = io()
    with torch.no_grad():
        out = model(ref["model_input_ids"], output_hidden_states=True)
    assert (out.logits - ref["model_logits"]).abs().max() <= TOL
    assert int(out.logits[0, -1].argmax()) == recipe_json("memory_layer.json")["tiny"]["model_logits_last_argmax"]


def test_the_base_rebuilt_from_its_seed_is_not_the_memory_model(model):
    """The memory changes the logits (the test above is not passing on the base alone)."""
    ref = io()
    with torch.no_grad():
        base = tiny_qwen2()(ref["model_input_ids"]).logits
        with memory_reading_zeros(model):
            muted = model(ref["model_input_ids"]).logits
        again = model(ref["model_input_ids"]).logits
    assert (base - ref["model_logits"]).abs().max() > 1e-4
    assert torch.equal(muted, base)  # a published memory is muted, not zeroed (its projections have biases)
    assert (again - ref["model_logits"]).abs().max() <= TOL


def test_padding_positions_count_only_when_asked(model):
    """smf counts the reads of real tokens; the published study counts every position (count_padding)."""
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 2, 2]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    memory = model.model.layers[1].mlp.memory
    memory.record = True
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
            real = memory.read_counts()
            memory.count_padding = True
            model(input_ids=ids, attention_mask=mask)
            every = memory.read_counts()
    finally:
        memory.record, memory.count_padding = False, False
    assert int(real.sum()) == 6 * 32 and int(every.sum()) == 8 * 32


def test_the_published_init_is_the_studys():
    """One layer at Qwen2.5-0.5B's width with the paper's memory (memory_layer.json: init_at_qwen_width)."""
    facts = recipe_json("memory_layer.json")["init_at_qwen_width"]
    config = MemoryConfig(layers=(0,), slots=128**2, heads=4, topk=16, key_dim=256, variant="published", scale=0.01)
    memory = ProductKeyMemory(896, config)
    memory.reset_parameters(torch.Generator().manual_seed(3))
    assert sum(p.numel() for n, p in memory.named_parameters() if n != "scale") == facts["_param_count_per_layer"]
    ours = {"keys": memory.keys, "values.weight": memory.values, "value_proj.weight": memory.out_proj.weight,
            "value_proj.bias": memory.out_proj.bias, "swilu_projection.weight": memory.gate_proj.weight,
            "swilu_projection.bias": memory.gate_proj.bias, "query_proj.query_mlps.0.weight": memory.q_proj.weight,
            "query_proj.query_mlps.0.bias": memory.q_proj.bias}
    for name, tensor in ours.items():
        ref = facts[name]
        assert tensor.numel() == ref["numel"], name
        assert tensor.std().item() == pytest.approx(ref["std"], rel=max(0.01, 3 / math.sqrt(ref["numel"]))), name
        assert abs(tensor.mean().item()) < 4 * ref["std"] / math.sqrt(ref["numel"]) + 1e-9, name
    expected = facts["_expected"]
    bounds = {"keys": expected["keys_uniform_bound_1/sqrt(k_dim)"],
              "query_proj.query_mlps.0.weight": expected["query_weight_xavier_uniform_bound"],
              "query_proj.query_mlps.0.bias": expected["query_bias_default_linear_bound_1/sqrt(896)"],
              "value_proj.bias": expected["value_proj_and_swilu_bias_default_linear_bound_1/sqrt(896)"],
              "swilu_projection.bias": expected["value_proj_and_swilu_bias_default_linear_bound_1/sqrt(896)"]}
    for name, bound in bounds.items():  # the uniform draws
        top = ours[name].abs().max().item()
        assert bound * 0.98 <= top <= bound, name
    for name in ("values.weight", "value_proj.weight", "swilu_projection.weight"):  # the normal draws
        assert ours[name].std().item() == pytest.approx(expected["values_normal_std_v_dim^-0.5"], rel=0.01), name
    assert float(memory.scale) == pytest.approx(0.01)


def test_the_published_memory_is_drawn_per_seed():
    config = MemoryConfig(layers=(0,), slots=64, heads=2, topk=4, key_dim=8, variant="published", scale=0.01)
    draws = []
    for seed in (0, 1, 0):
        memory = ProductKeyMemory(16, config)
        memory.reset_parameters(torch.Generator().manual_seed(seed))
        draws.append(memory.values.detach())
    assert torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[1])


def test_smf_layer_stays_the_default_no_op():
    config = MemoryConfig(layers=(1,), slots=64, heads=2, topk=4, key_dim=8)
    assert config.variant == "smf" and config.value_init == "zeros"
    base = tiny_qwen2()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = base(ids).logits
        after = retrofit(base, config)(ids).logits
    assert torch.equal(before, after)
    assert memory_layers(base)[1].q_proj.bias is None


def test_a_published_layer_with_zero_values_is_refused():
    with pytest.raises(SmfError, match="published memory layer draws its values"):
        MemoryConfig.from_dict({"variant": "published", "value_init": "zeros"}, where="memory")


def test_a_checkpoint_into_smfs_layer_is_refused():
    model = retrofit(tiny_qwen2(), MemoryConfig(layers=(1,), slots=4096, heads=4, topk=8, key_dim=32))
    from recipe_model import RECIPE

    with pytest.raises(SmfError, match="variant: published"):
        load_published_memory(model, RECIPE / "tiny_memory_ckpt" / "model.safetensors")


def test_the_study_config_matches_the_checkpoint():
    assert study_memory_config().slots == recipe_json("memory_layer.json")["tiny"]["param_shapes"]["model.layers.1.mlp.memory.values.weight"][0]


def test_a_saved_published_memory_loads_in_smf_and_in_transformers(model, tmp_path, tokenizer):
    """The export carries the variant: smf's loader and transformers (trust_remote_code) give the published logits."""
    from transformers import AutoModelForCausalLM

    from smf.memory import load_retrofitted, save_retrofitted

    ref = io()
    folder = save_retrofitted(model, tokenizer, tmp_path / "published")
    ours = load_retrofitted(folder)
    theirs = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        for loaded in (ours, theirs):
            assert (loaded(ref["model_input_ids"]).logits - ref["model_logits"]).abs().max() <= TOL


def test_the_paper_shaped_layer_gives_the_published_outputs():
    """The paper's memory shape (16,384 slots, 4 heads, top-16, key dim 256) at width 64: the layer's output and
    the rows each head reads. The fixture keeps only the value rows the 14 tokens read (no other row can enter
    the output), so the rest of the table is zeros here."""
    from safetensors.torch import load_file

    from recipe_model import RECIPE

    t = load_file(str(RECIPE / "memory_layer_paper_shape_read.safetensors"))
    config = recipe_json("memory_layer.json")["paper_shape"]["config"]
    memory = ProductKeyMemory(config["input_dim"], MemoryConfig(
        layers=(0,), slots=config["mem_n_keys"] ** 2, heads=config["mem_heads"], topk=config["mem_knn"],
        key_dim=config["mem_k_dim"], variant="published"))
    memory.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        memory.keys.copy_(t["weights.keys"].reshape(memory.keys.shape))
        memory.values.zero_()
        memory.values[t["values_rows"]] = t["values_read"]
        for ours, theirs in (("q_proj", "query_proj.query_mlps.0"), ("gate_proj", "swilu_projection"), ("out_proj", "value_proj")):
            getattr(memory, ours).weight.copy_(t[f"weights.{theirs}.weight"])
            getattr(memory, ours).bias.copy_(t[f"weights.{theirs}.bias"])
        x = t["x"]
        rows, scores = memory.scored_lookup(memory.normalize(x.reshape(-1, x.shape[-1])))
        out = memory(x)
    assert torch.equal(rows, t["last_indices"])
    assert (scores - t["last_scores"]).abs().max() <= TOL
    assert (out - t["memory_out"]).abs().max() <= TOL
    assert set(t["values_rows"].tolist()) == set(rows.flatten().tolist())
