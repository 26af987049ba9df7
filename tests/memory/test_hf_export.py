"""Folders smf saves load correctly in plain transformers, or not at all.

A retrofitted or SMF-trained folder carries its own modeling code (`modeling_smf.py`,
`layer.py`, `auto_map` in config.json): with trust_remote_code it loads to smf's logits;
without, transformers refuses it (it never comes up with randomly initialised FFNs).
"""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import tiny_model
from smf.memory import MemoryConfig, load_retrofitted, memory_layers, retrofit, save_retrofitted

MEM = MemoryConfig(layers=(1, 3), slots=256, heads=2, topk=4, key_dim=16)


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory, tokenizer):
    """A tiny retrofitted model whose memory values were changed (as SMF training does), saved by smf."""
    model = retrofit(tiny_model(vocab_size=len(tokenizer)), MEM)
    with torch.no_grad():
        for memory in memory_layers(model).values():
            memory.values.normal_(0, 0.5)  # non-zero values: the memory changes the logits
    return save_retrofitted(model, tokenizer, tmp_path_factory.mktemp("export") / "smf")


def test_transformers_loads_the_same_logits(trained_folder, tokenizer):
    ids = tokenizer(["The capital of France is", "Hello"], return_tensors="pt", padding=True)
    ours = load_retrofitted(trained_folder)
    theirs = AutoModelForCausalLM.from_pretrained(trained_folder, trust_remote_code=True).eval()
    with torch.no_grad():
        a, b = ours(**ids).logits, theirs(**ids).logits
    assert type(theirs).__name__ == "SmfForCausalLM"
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    out = theirs.generate(**tokenizer("Hi", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert out.shape[1] > 1
    assert tokenizer.chat_template and "assistant" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)


def test_the_memory_matters_in_the_transformers_model(trained_folder, tokenizer):
    """The loaded model uses its memory: zeroing the values changes the logits."""
    model = AutoModelForCausalLM.from_pretrained(trained_folder, trust_remote_code=True).eval()
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        before = model(**ids).logits
        for block in model.model.layers:
            if hasattr(block.mlp, "memory"):
                block.mlp.memory.values.zero_()
        after = model(**ids).logits
    assert not torch.allclose(before, after, atol=1e-4)


def test_without_trust_remote_code_it_is_refused(trained_folder):
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForCausalLM.from_pretrained(trained_folder, trust_remote_code=False)
    assert json.loads((trained_folder / "config.json").read_text())["model_type"] == "smf"


@pytest.mark.slow
def test_the_folder_loads_without_smf(trained_folder):
    """The folder's code imports nothing from smf: load it in a process where smf cannot be imported."""
    code = (
        "import sys; sys.modules['smf'] = None\n"
        "from transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(trained_folder)!r}, trust_remote_code=True)\n"
        "print(type(m).__name__, sum(p.numel() for p in m.parameters()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    n = sum(p.numel() for p in load_retrofitted(trained_folder).parameters())
    assert out.stdout.split()[-2:] == ["SmfForCausalLM", str(n)]


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_replacement_mode_and_other_architectures(kind, tmp_path, tokenizer):
    mem = MemoryConfig(layers=(0, 2), slots=64, heads=1, topk=4, key_dim=8, mode="replacement")
    model = retrofit(tiny_model(kind, vocab_size=len(tokenizer)), mem)
    folder = save_retrofitted(model, tokenizer, tmp_path / kind)
    theirs = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    ids = tokenizer("one two three", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**ids).logits, theirs(**ids).logits, atol=1e-5)
    assert not hasattr(theirs.model.layers[0].mlp, "gate_proj") and theirs.model.layers[0].mlp.ffn is None


@pytest.mark.slow
def test_the_retrofitted_default_model_loads_in_transformers(default_model, tmp_path):
    import copy

    model, tokenizer = default_model
    retro = retrofit(copy.deepcopy(model), MemoryConfig(layers=(8, 14, 20), slots=4096, heads=4, topk=16, key_dim=256))
    with torch.no_grad():
        for memory in memory_layers(retro).values():
            memory.values.normal_(0, 0.02)
    folder = save_retrofitted(retro, tokenizer, tmp_path / "retro")
    theirs = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    ids = tokenizer("Sparse memory finetuning keeps what the model knew.", return_tensors="pt")
    with torch.no_grad():
        expected = retro(**ids).logits
        assert torch.allclose(load_retrofitted(folder)(**ids).logits, expected, atol=1e-5)
        assert torch.allclose(theirs(**ids).logits, expected, atol=1e-5)
