"""How the evaluator calls a Hugging Face causal LM: padding, positions, KV cache.

Works for any `AutoModelForCausalLM` (base, retrofitted with memory layers,
LoRA-wrapped or merged, finetuned): only `input_ids`, `attention_mask` (2D, or a
custom 4D mask where the attention implementation takes one), `position_ids` and
the KV cache are passed, plus `logits_to_keep` where the model's forward declares it.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import torch


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _inner(model: torch.nn.Module) -> torch.nn.Module:
    # A PEFT wrapper forwards **kwargs to the model it wraps; inspect that one.
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@lru_cache(maxsize=None)
def _forward_params(model_type: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_type.forward).parameters)


def logits_to_keep_kwargs(model: torch.nn.Module, keep: int) -> dict:
    """Forward kwargs that compute logits at the last `keep` positions only, where the
    model supports it (the LM head is ~20% of a small model's forward). Callers still
    slice the last `keep` positions themselves, for models that return them all."""
    return {"logits_to_keep": keep} if "logits_to_keep" in _forward_params(type(_inner(model))) else {}


def last_logits_kwargs(model: torch.nn.Module) -> dict:
    return logits_to_keep_kwargs(model, 1)


def supports_custom_mask(model: torch.nn.Module) -> bool:
    """Whether the model's attention takes a custom 4D mask: HF's eager and SDPA
    attention do (transformers passes a 4D mask through as given); flash kernels do not."""
    config = getattr(_inner(model), "config", None)
    return getattr(config, "_attn_implementation", None) in ("eager", "sdpa")


def cache_kwargs(model: torch.nn.Module, cache) -> dict:
    """Pass a KV cache under the name this transformers version uses (`cache` since
    5.2x, `past_key_values` before)."""
    name = "cache" if "cache" in _forward_params(type(_inner(model))) else "past_key_values"
    return {name: cache}


def output_cache(out):
    """The KV cache a forward with use_cache=True returned."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad token rows so every row ends at the last column.

    Returns input_ids [B, T], attention_mask [B, T] and position_ids [B, T]; the
    positions count real tokens only, so a padded row sees the positions it would
    see alone (HF models do not derive them from the mask on a plain forward).
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def right_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows: input_ids [B, T] and attention_mask [B, T]. Causal
    attention keeps real tokens blind to the padding after them."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids.to(device), mask.to(device)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of `targets` and whether each is the argmax.

    logits [..., V], targets [...] -> (logprob [...] float32, is_argmax [...] bool).
    Uses logsumexp rather than a full log_softmax, so no second [..., V] tensor is made.
    """
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - logits.logsumexp(-1), logits.argmax(-1) == targets
