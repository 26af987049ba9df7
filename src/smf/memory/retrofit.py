"""Retrofit a Hugging Face decoder with memory layers; save and load it symmetrically.

`retrofit(model, config)` replaces `model.layers[i].mlp` (Llama, Qwen2, Mistral and
other decoders with that layout) by a `MemoryMLP` around the original FFN. In additive
mode with zero values the model's outputs do not change.

A retrofitted model is saved as a folder: `model.safetensors` (every weight, memory
included), the tokenizer files, `smf_memory.json` (the MemoryConfig), and what
transformers needs to load it without smf: `config.json` (the base architecture's
settings, `model_type: smf`, the memory config and an `auto_map`), `modeling_smf.py` and
`layer.py` (see `modeling_smf.py`). `AutoModelForCausalLM.from_pretrained(folder,
trust_remote_code=True)` gives smf's model; without trust_remote_code transformers
refuses the folder rather than load it wrong. `load_retrofitted` rebuilds the base
architecture, retrofits it with the same config and loads the weights: identical logits.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_model
from torch import nn

from smf import __version__
from smf.errors import SmfError
from smf.io import atomic_dir, read_json, reading, write_json_atomic
from smf.memory.config import MemoryConfig
from smf.memory.layer import MemoryMLP, ProductKeyMemory
from smf.names import HF_CONFIG_FILE, LAYER_FILE, MEMORY_FILE, MODELING_FILE, WEIGHTS_FILE

MODEL_TYPE = "smf"  # config.json's model_type; the base architecture's is kept as base_model_type


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder's list of transformer blocks (each with an `.mlp`)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not all(hasattr(block, "mlp") for block in layers):
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise SmfError(f"cannot retrofit a '{kind}' model: smf supports Llama/Qwen2-style decoders (model.layers[i].mlp)")
    return layers


def memory_layers(model: nn.Module) -> dict[int, ProductKeyMemory]:
    """{decoder layer index: its memory}, in layer order; empty if not retrofitted."""
    found = {}
    for i, block in enumerate(decoder_layers(model)):
        if isinstance(block.mlp, MemoryMLP):
            found[i] = block.mlp.memory
    return found


def memory_config(model: nn.Module) -> MemoryConfig | None:
    return getattr(model, "smf_memory_config", None)


@contextlib.contextmanager
def memory_reading_zeros(model: nn.Module):
    """Within the block, every additive memory of `model` reads zeros: the model gives its pretrained outputs
    (mem(x) is out_proj(read · gate), without a bias). The values are restored after, bit for bit. A
    published-variant memory (its projections have biases) is muted instead: its FFN alone."""
    blocks = [b.mlp for b in decoder_layers(model) if isinstance(b.mlp, MemoryMLP)]
    if any(b.ffn is None for b in blocks):
        raise SmfError("the model's memory replaces its FFNs, so without the memory it is not the pretrained model; "
                       "keep the answers of the model as it is instead (smf learn --keep-from start)")
    saved, muted = {}, [b.memory for b in blocks if b.memory.published]
    with torch.no_grad():
        for i, b in enumerate(blocks):
            if not b.memory.published and b.memory.values.any():
                saved[i] = b.memory.values.detach().clone()
                b.memory.values.zero_()
    for memory in muted:
        memory.muted = True
    try:
        yield model
    finally:
        for memory in muted:
            memory.muted = False
        with torch.no_grad():
            for i, values in saved.items():
                blocks[i].memory.values.copy_(values)


# The published study's checkpoint names (under `model.layers.<i>.mlp.`) → this layer's.
PUBLISHED_NAMES = {
    "memory.keys": "memory.keys",
    "memory.values.weight": "memory.values",
    "memory.query_proj.query_mlps.0.weight": "memory.q_proj.weight",
    "memory.query_proj.query_mlps.0.bias": "memory.q_proj.bias",
    "memory.swilu_projection.weight": "memory.gate_proj.weight",
    "memory.swilu_projection.bias": "memory.gate_proj.bias",
    "memory.value_proj.weight": "memory.out_proj.weight",
    "memory.value_proj.bias": "memory.out_proj.bias",
    "memory_scale": "memory.scale",
}


def load_published_memory(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the memory of a checkpoint the published study saved (a safetensors file of
    `model.layers.<i>.mlp.memory.*` and `model.layers.<i>.mlp.memory_scale`) into `model`,
    retrofitted with the published variant and the same shape; returns the model."""
    path = Path(path)
    memories = memory_layers(model)
    fix = "give the study's memory checkpoint (model.safetensors) of a model retrofitted with the same memory config"
    state = {}
    with reading(path, fix), safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            m = re.fullmatch(r"model\.layers\.(\d+)\.mlp\.(.+)", name)
            if m is None or m.group(2) not in PUBLISHED_NAMES or int(m.group(1)) not in memories:
                raise SmfError(f"{path}: {name} is not a memory tensor of this model's layers {sorted(memories)}; {fix}")
            memory = memories[int(m.group(1))]
            if not memory.published:
                raise SmfError(f"{path}: memory layer {m.group(1)} is smf's variant; retrofit with variant: published to load the study's memory")
            target = PUBLISHED_NAMES[m.group(2)].removeprefix("memory.")
            own = memory.get_parameter(target)
            tensor = f.get_tensor(name)
            if tensor.numel() != own.numel():
                raise SmfError(f"{path}: {name} has shape {tuple(tensor.shape)}, layer {m.group(1)} needs {tuple(own.shape)}; {fix}")
            state[(memory, target)] = tensor.reshape(own.shape)
    missing = [f"{i}.{n}" for i, memory in memories.items() for n, _ in memory.named_parameters() if (memory, n) not in state]
    if missing:
        raise SmfError(f"{path}: no tensor for memory {missing[0]}; {fix}")
    with torch.no_grad():
        for (memory, target), tensor in state.items():
            memory.get_parameter(target).copy_(tensor)
    return model


def retrofit(model: nn.Module, config: MemoryConfig, initialise: bool = True) -> nn.Module:
    """Add memory layers to `model` in place and return it.

    With `initialise=False` the memory parameters stay on the meta device (no memory, no
    random draws), for a loader that assigns saved tensors to them."""
    layers = decoder_layers(model)
    config = config.at_depth(len(layers))
    config.check("memory", num_layers=len(layers))
    if memory_layers(model):
        raise SmfError("this model already has memory layers; retrofit the base model instead")
    hidden = model.config.hidden_size
    generator = torch.Generator().manual_seed(config.seed)
    for i in config.layers:
        ffn = layers[i].mlp
        ref = next(ffn.parameters())
        memory = ProductKeyMemory(hidden, config)
        if initialise:
            memory.reset_parameters(generator)
            memory.to(device=ref.device, dtype=ref.dtype)
        layers[i].mlp = MemoryMLP(ffn if config.mode == "additive" else None, memory)
    model.smf_memory_config = config
    _install_mask_hook(model)
    return model


def _install_mask_hook(model: nn.Module) -> None:
    """Tell each memory which positions are real tokens before every forward pass.

    The memories sit inside the FFNs and never see the attention mask, so a pre-hook
    on the decoder hands it to them (HF decoders take it as `attention_mask`, the
    second positional argument).
    """
    memories = list(memory_layers(model).values())

    def hand_over_mask(module, args, kwargs):
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        if mask is not None and mask.dim() != 2:
            mask = None  # a 4-D mask is already expanded; cannot tell padding apart
        for memory in memories:
            memory.token_mask = mask

    model.get_decoder().register_forward_pre_hook(hand_over_mask, with_kwargs=True)


def set_recording(model: nn.Module, on: bool) -> None:
    """Switch access recording on or off in every memory layer."""
    for memory in memory_layers(model).values():
        memory.record = on
        if not on:
            memory.last_rows = None


def save_retrofitted(
    model: nn.Module, tokenizer, out: str | os.PathLike, *, overwrite: bool = False,
    extra: dict | None = None, copy_files: list[Path] = (),
) -> Path:
    """Write a retrofitted model (and tokenizer) to the folder `out`, atomically.

    `copy_files` are copied in too (e.g. the background statistics of the source folder).
    """
    assert memory_config(model) is not None, "not a retrofitted model"
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_model_files(model, tmp, extra)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for file in copy_files:
            shutil.copy2(file, tmp / Path(file).name)
    return out


def write_model_files(model: nn.Module, folder: str | os.PathLike, extra: dict | None = None) -> None:
    """Beside the weights (smf's own, or those transformers' `save_pretrained` wrote into `folder`): the files
    that make `folder` a folder of a retrofitted model (config.json with its auto_map, modeling_smf.py,
    layer.py, smf_memory.json with `extra` in it)."""
    config = memory_config(model)
    if config is None:
        raise SmfError("this model has no memory layers; add them first: smf.add_memory(model, smf.MemoryConfig())")
    folder = Path(folder)
    _write_transformers_files(model, config, folder)
    write_json_atomic(folder / MEMORY_FILE, {"smf_version": __version__, "memory": config.to_dict(), **(extra or {})})


def _write_transformers_files(model: nn.Module, config: MemoryConfig, folder: Path) -> None:
    """config.json, modeling_smf.py and layer.py: the folder as a transformers custom model."""
    here = Path(__file__).parent
    code = (here / MODELING_FILE).read_text(encoding="utf-8")
    for base, marker in ((type(model.config), "BaseConfig  # smf: base config"), (type(model), "BaseForCausalLM  # smf: base model")):
        name = marker.split()[0]
        code, n = re.subn(rf"^from \S+ import \w+ as {marker}$", f"from {base.__module__} import {base.__name__} as {marker}", code, flags=re.M)
        assert n == 1, f"{MODELING_FILE} has no import line for {name}"
    (folder / MODELING_FILE).write_text(code, encoding="utf-8")
    shutil.copy2(here / LAYER_FILE, folder / LAYER_FILE)
    arch = model.config.to_dict()
    arch.update(model_type=MODEL_TYPE, base_model_type=model.config.model_type, architectures=["SmfForCausalLM"],
                auto_map={"AutoConfig": "modeling_smf.SmfConfig", "AutoModelForCausalLM": "modeling_smf.SmfForCausalLM"},
                smf_memory=config.to_dict())
    write_json_atomic(folder / HF_CONFIG_FILE, arch)


def base_architecture(path: Path):
    """The base decoder's transformers config of a folder smf saved (any smf version)."""
    from transformers import CONFIG_MAPPING  # why: transformers takes seconds to import; smf --help needs none

    arch = read_json(path / HF_CONFIG_FILE)
    if arch.get("model_type") == MODEL_TYPE:
        arch["model_type"] = arch.pop("base_model_type")
        for key in ("auto_map", "smf_memory", "architectures"):
            arch.pop(key, None)
    try:
        return CONFIG_MAPPING[arch.get("model_type")].from_dict(arch)
    except (ValueError, KeyError, TypeError) as e:
        raise SmfError(f"{path / 'config.json'}: not a model config transformers knows ({str(e).splitlines()[0]})") from None


def _tied_names(model: nn.Module) -> dict[str, set[str]]:
    """name → every name of the same tensor: parameters shared by identity, and the pairs
    transformers ties by name (`_tied_weights_keys`, output → input) when the config ties them."""
    groups: dict[int, set[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), set()).add(name)
    alias_of = {name: group for group in groups.values() for name in group}
    tied = getattr(model, "_tied_weights_keys", None)
    if isinstance(tied, dict) and getattr(model.config.get_text_config(), "tie_word_embeddings", False):
        for target, source in tied.items():
            group = alias_of.get(source, {source}) | alias_of.get(target, {target})
            for name in group:
                alias_of[name] = group
    return alias_of


def load_retrofitted(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> nn.Module:
    """Load a folder written by `save_retrofitted` (weights and memory layers)."""
    from transformers import AutoModelForCausalLM  # why: as in base_architecture

    path = Path(path)
    meta = read_json(path / MEMORY_FILE)
    if not isinstance(meta, dict) or "memory" not in meta:
        raise SmfError(f"{path / MEMORY_FILE}: no 'memory' section; was this folder written by smf?")
    config = MemoryConfig.from_dict(meta["memory"], where=str(path / MEMORY_FILE))
    if not (path / WEIGHTS_FILE).is_file():
        raise SmfError(f"{path}: {WEIGHTS_FILE} is missing; the folder is incomplete")
    # In place: the model is built without weights (parameters on the meta device, buffers
    # real) and each saved tensor becomes its parameter, so loading holds one copy of the
    # weights and tables, not a random initialisation plus the loaded state.
    from accelerate import init_empty_weights  # why: imports transformers' utilities, seconds

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(base_architecture(path), dtype=dtype)
    retrofit(model, config, initialise=False)
    fix = "the model folder is damaged or incomplete; write it again (smf retrofit, smf export)"
    with reading(path / WEIGHTS_FILE, fix), safe_open(str(path / WEIGHTS_FILE), framework="pt") as f:
        names = list(f.keys())
        expected = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
        unexpected = [n for n in names if n not in expected]
        if unexpected:
            raise SmfError(f"{path / WEIGHTS_FILE} does not match its config: unexpected {sorted(unexpected)[:3]}")
        alias_of = _tied_names(model)  # a tied tensor (input embedding, output layer) is saved under one name
        state = {}
        for name in names:
            tensor = f.get_tensor(name)
            tensor = tensor if not tensor.is_floating_point() else tensor.to(dtype)
            for alias in alias_of.get(name, [name]):
                state[alias] = tensor
    model.load_state_dict(state, strict=False, assign=True)
    del state
    model.tie_weights()  # tied modules share one Parameter again (assign gave each its own)
    missing = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.is_meta]
    if missing:
        raise SmfError(f"{path / WEIGHTS_FILE} does not match its config: missing {sorted(missing)[:3]}")
    return model.to(device).eval()
