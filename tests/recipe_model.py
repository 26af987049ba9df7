"""The published SMF-on-Qwen study's tiny model, rebuilt for the recipe parity tests.

`tests/fixtures/recipe/` holds what the published code gave on it (its README says how each
file was made). The base is rebuilt from its config and seed (a Qwen2 of width 64, 3 layers,
weights drawn by the constructor after `torch.manual_seed(0)`: the published file's weights,
bit for bit); its memory (layer 1, 4,096 slots, the published variant) comes from the study's
own checkpoint, `tiny_memory_ckpt/model.safetensors`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

RECIPE = Path(__file__).resolve().parent / "fixtures" / "recipe"


def recipe_json(name: str) -> dict:
    return json.loads((RECIPE / name).read_text(encoding="utf-8"))


def tiny_qwen2():
    """The study's tiny random base model (fp32, eval mode)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=2048, rope_theta=1e4, rms_norm_eps=1e-6,
                         tie_word_embeddings=True, initializer_range=0.1, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config.pad_token_id = 2
    return model


def study_memory_config():
    """The tiny checkpoint's memory as an smf MemoryConfig (from its memory_config.json)."""
    from smf.memory import MemoryConfig

    c = json.loads((RECIPE / "tiny_memory_ckpt" / "memory_config.json").read_text())
    return MemoryConfig(layers=tuple(c["layers"]), slots=c["mem_n_keys"] ** 2, heads=c["mem_heads"], topk=c["mem_knn"],
                        key_dim=c["mem_k_dim"], mode=c["mode"], variant="published", scale=c["memory_scale_init"])


def study_model():
    """The tiny base with the study's memory checkpoint loaded: the published `load_eval_model`'s model."""
    from smf.memory import load_published_memory, retrofit

    model = retrofit(tiny_qwen2(), study_memory_config())
    return load_published_memory(model, RECIPE / "tiny_memory_ckpt" / "model.safetensors").eval()


@lru_cache(maxsize=1)
def io() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(RECIPE / "memory_layer_tiny_io.safetensors"))
