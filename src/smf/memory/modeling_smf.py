"""Transformers code for a decoder with smf's product-key memory layers.

smf writes this file and `layer.py` into every model folder it saves, beside a
`config.json` whose `auto_map` names the classes below, so the folder loads anywhere
transformers runs, with or without smf installed:

    AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

It imports nothing from smf. The two `Base...` imports name the decoder the memory was
added to; smf rewrites them for the saved model's architecture (Llama, Qwen2, ...).
`SmfForCausalLM` is that decoder with the FFN of each memory layer wrapped: FFN(x) +
mem(x) (additive) or mem(x) (replacement); the weights keep smf's names
(`model.layers.<i>.mlp.ffn.*`, `model.layers.<i>.mlp.memory.*`).
"""

from __future__ import annotations

from types import SimpleNamespace

from transformers.models.llama.configuration_llama import LlamaConfig as BaseConfig  # smf: base config
from transformers.models.llama.modeling_llama import LlamaForCausalLM as BaseForCausalLM  # smf: base model

from .layer import MemoryMLP, ProductKeyMemory


class SmfConfig(BaseConfig):
    """The base decoder's config plus `smf_memory`: layers, slots, heads, topk, key_dim,
    value_dim, mode, value_init, value_init_std (smf's MemoryConfig)."""

    model_type = "smf"

    def __init__(self, smf_memory: dict | None = None, **kwargs):
        self.smf_memory = dict(smf_memory or {})
        super().__init__(**kwargs)


class SmfForCausalLM(BaseForCausalLM):
    config_class = SmfConfig

    def __init__(self, config: SmfConfig):
        super().__init__(config)
        memory = SimpleNamespace(**config.smf_memory)
        for i in memory.layers:
            block = self.model.layers[i]
            ffn = block.mlp if memory.mode == "additive" else None
            block.mlp = MemoryMLP(ffn, ProductKeyMemory(config.hidden_size, memory))
        self.post_init()
