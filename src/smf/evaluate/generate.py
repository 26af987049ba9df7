"""Batched greedy generation that stops at stop strings, as lm-eval's `generate_until`.

Prompts are left-padded and decoded together with a KV cache. The tokens every prompt begins
with (a chat template's system turn) are run once per batch and their cache shared by its rows:
each row then reads prefix, padding, its own tokens, with positions that count real tokens only,
so it sees what it would see alone. A row is done once
it emits an end-of-sequence token or its decoded text contains a stop string, and
leaves the batch (and the cache) then; the batch ends when every row is done or
`max_new_tokens` is reached. The text is then
cut at the stop strings exactly as lm-eval cuts it (`cut_at_stops`).

`generation_settings(model, tokenizer, "generation_config")` gives what the published
SMF-on-Qwen study's `model.generate(do_sample=False)` applies: the model's generation config's
repetition penalty (a token already in the prompt or the answer has its logit divided by
the penalty, or multiplied when negative: transformers' rule, each row over its own tokens,
never the padding), and only the tokenizer's end-of-sequence token ends a row. The sampling
fields of that config do nothing there (greedy is forced); "greedy" (the default) is this
loop without a penalty, ended by any end token of the tokenizer or the generation config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from smf.errors import SmfError
from smf.evaluate.calls import cache_kwargs, last_logits_kwargs, left_pad, model_device, output_cache


@dataclass(frozen=True)
class Generation:
    """What one prompt produced: the cut text, the raw decoded text, tokens generated."""

    text: str
    raw: str
    n_tokens: int
    ids: tuple[int, ...] = ()  # the tokens generated (no end-of-sequence token)


def cut_at_stops(text: str, stop: Sequence[str]) -> str:
    """Keep what precedes the stop strings, applied one after another in order
    (lm-eval's rule; empty stop strings are ignored)."""
    for term in stop:
        if term:
            text = text.split(term)[0]
    return text


def stop_token_ids(model, tokenizer) -> set[int]:
    """End-of-sequence ids: the tokenizer's EOS and the model's generation config's."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None) if config is not None else None
    if eos is not None:
        ids |= set(eos) if isinstance(eos, (list, tuple)) else {eos}
    return ids


DECODINGS = ("greedy", "generation_config")
# Fields of a generation config that would change a greedy answer in transformers' generate, but that
# decoding generation_config does not apply: refused rather than silently ignored (name → neutral values).
UNAPPLIED = {"no_repeat_ngram_size": (None, 0), "min_length": (None, 0), "min_new_tokens": (None, 0),
             "bad_words_ids": (None,), "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "sequence_bias": (None,),
             "forced_bos_token_id": (None,), "forced_eos_token_id": (None,), "encoder_repetition_penalty": (None, 1.0)}


def generation_settings(model, tokenizer, decoding: str) -> tuple[set[int], float]:
    """(end-of-sequence ids, repetition penalty) of a decoding: greedy (every end token, no penalty)
    or generation_config (the tokenizer's EOS only, the model's generation config's penalty)."""
    if decoding == "greedy":
        return stop_token_ids(model, tokenizer), 1.0
    assert decoding == "generation_config", decoding
    config = getattr(model, "generation_config", None)
    for name, neutral in UNAPPLIED.items():
        value = getattr(config, name, None)
        if value not in neutral:
            raise SmfError(f"the model's generation config sets {name} = {value!r}, which decoding generation_config does not "
                           f"apply (only repetition_penalty); use decoding: greedy, or remove {name} from generation_config.json")
    penalty = getattr(config, "repetition_penalty", None) if config is not None else None
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    return eos, float(penalty) if penalty is not None else 1.0


def penalize(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (A, V), seen (A, V) bool → the logits of seen tokens divided by `penalty` (multiplied
    where negative), as transformers' repetition penalty."""
    return torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)


@torch.inference_mode()
def greedy_generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    *,
    stop: Sequence[str] = ("\n",),
    max_new_tokens: int = 32,
    batch_size: int = 16,
    on_batch: Callable[[int, int], None] | None = None,
    decoding: str = "greedy",
) -> list[Generation]:
    """Greedy continuations of token-id prompts, in input order.

    `on_batch(n_prompts, n_tokens)` is called after each batch with the number of
    tokens the model processed (prompt tokens plus generated tokens). `decoding`: greedy
    or generation_config (see the module doc).
    """
    assert all(prompts), "empty prompt"
    device = model_device(model)
    eos, penalty = generation_settings(model, tokenizer, decoding)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos), 0)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    shared = shared_prefix(prompts)
    results: list[Generation | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        outs = _generate_batch(model, tokenizer, [prompts[i] for i in idx], stop, max_new_tokens, eos, pad, device, penalty,
                               shared)
        for i, g in zip(idx, outs):
            results[i] = g
        if on_batch is not None:
            on_batch(len(idx), sum(len(prompts[i]) for i in idx) + sum(g.n_tokens for g in outs))
    return results  # type: ignore[return-value]


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every prompt shares, leaving each at least one token of its own
    (0 for a single prompt: nothing to share)."""
    if len(prompts) < 2:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    return n


def _generate_batch(model, tokenizer, prompts, stop, max_new_tokens, eos, pad, device, penalty: float = 1.0,
                    shared: int = 0) -> list[Generation]:
    cache = None
    ids, mask, positions = left_pad([p[shared:] for p in prompts], pad, device)
    if shared:  # the shared prefix once, its cache repeated for every row: prefix, padding, the row's own tokens
        out = model(input_ids=torch.tensor([prompts[0][:shared]], device=device), use_cache=True, **last_logits_kwargs(model))
        cache = output_cache(out)
        cache.batch_repeat_interleave(len(prompts))
        mask = torch.cat([mask.new_ones((len(prompts), shared)), mask], dim=1)
        positions = positions + shared
    seen = None  # (A, V) bool: the tokens of each live row so far (repetition penalty only)
    generated: list[list[int]] = [[] for _ in prompts]
    active = list(range(len(prompts)))  # rows still generating, in cache order
    step_ids, step_pos = ids, positions
    for _ in range(max_new_tokens):
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=step_pos,
            use_cache=True,
            **cache_kwargs(model, cache),
            **last_logits_kwargs(model),
        )
        cache = output_cache(out)
        logits = out.logits[:, -1].float()
        if penalty != 1.0:
            if seen is None:
                seen = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
                for row, prompt in enumerate(prompts):
                    seen[row, torch.tensor(prompt, device=logits.device)] = True
            logits = penalize(logits, seen, penalty)
        next_ids = logits.argmax(-1)  # [A]
        keep = []
        for k, token in enumerate(next_ids.tolist()):
            row = active[k]
            if token in eos:
                continue
            generated[row].append(token)
            text = tokenizer.decode(generated[row], skip_special_tokens=True)
            if not any(s and s in text for s in stop):
                keep.append(k)
        if not keep:
            break
        if len(keep) < len(active):
            # Drop finished rows from the batch and the cache: later steps cost only live rows.
            sel = torch.tensor(keep, device=device)
            cache.batch_select_indices(sel)
            next_ids, mask, step_pos = next_ids[sel], mask[sel], step_pos[sel]
            seen = seen[sel] if seen is not None else None
            active = [active[k] for k in keep]
        if seen is not None:
            seen[torch.arange(len(active), device=seen.device), next_ids] = True
        step_ids = next_ids.unsqueeze(-1)
        step_pos = step_pos[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
    results = []
    for toks in generated:
        raw = tokenizer.decode(toks, skip_special_tokens=True)
        results.append(Generation(cut_at_stops(raw, stop), raw, len(toks), tuple(toks)))
    return results
