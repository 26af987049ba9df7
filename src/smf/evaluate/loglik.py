"""Log-likelihood of continuations after a shared context: the multiple-choice engine.

A request is one question: a context and the continuations (choices) to score after
it. The shared-prefix engine runs the context once, batched across questions
(left-padded), and reads every choice's first token from the context's last
position; choices longer than one token continue from the context's KV cache,
copied to one row per choice. Single-token choices (` A`..` D`) need no second
pass at all. `score_requests_full` is the plain reference: one full
(context + continuation) sequence per choice, as lm-eval runs them.

Both return, per continuation, the summed log-probability of its tokens and
whether greedy decoding would have produced it (lm-eval's `is_greedy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from smf.evaluate.calls import (
    cache_kwargs,
    last_logits_kwargs,
    left_pad,
    model_device,
    output_cache,
    right_pad,
    token_logprobs,
)


@dataclass(frozen=True)
class Request:
    """One question: context token ids and the token ids of each continuation."""

    context: list[int]
    continuations: list[list[int]]


@dataclass(frozen=True)
class Scores:
    """Per continuation of one request: summed log-prob, token count, greedy flag."""

    logprobs: list[float]
    n_tokens: list[int]
    greedy: list[bool]


def _truncate(request: Request, max_length: int | None) -> Request:
    # lm-eval keeps the last max_length + 1 tokens of context + continuation; with a
    # shared context we cut for the longest continuation, identical unless overflowing.
    if max_length is None:
        return request
    longest = max(len(c) for c in request.continuations)
    keep = max(1, max_length + 1 - longest)
    return Request(request.context[-keep:], request.continuations) if len(request.context) > keep else request


@torch.inference_mode()
def score_requests(
    model,
    requests: list[Request],
    *,
    batch_size: int = 16,
    pad_id: int = 0,
    max_length: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[Scores]:
    """Score every continuation of every request with one context pass per question.

    `batch_size` counts questions per forward. `on_batch(n_requests, n_tokens)` is
    called after each batch (progress and throughput). Results are in input order.
    """
    for r in requests:
        assert r.context and r.continuations and all(r.continuations), "empty context or continuation"
    device = model_device(model)
    requests = [_truncate(r, max_length) for r in requests]
    # Longest contexts first (like lm-eval): similar lengths share a batch, less padding.
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].context))
    results: list[Scores | None] = [None] * len(requests)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = [requests[i] for i in idx]
        for i, scores in zip(idx, _score_batch(model, batch, pad_id, device)):
            results[i] = scores
        if on_batch is not None:
            on_batch(len(batch), sum(len(r.context) + sum(len(c) - 1 for c in r.continuations) for r in batch))
    return results  # type: ignore[return-value]


def _score_batch(model, batch: list[Request], pad_id: int, device) -> list[Scores]:
    needs_cache = any(len(c) > 1 for r in batch for c in r.continuations)
    ids, mask, positions = left_pad([r.context for r in batch], pad_id, device)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=needs_cache,
        **last_logits_kwargs(model),
    )
    last = out.logits[:, -1]  # [B, V]: predicts each continuation's first token

    # rows: one per (request, continuation); first-token scores read from `last`.
    rows = [(b, j) for b, r in enumerate(batch) for j in range(len(r.continuations))]
    conts = [batch[b].continuations[j] for b, j in rows]
    row_req = torch.tensor([b for b, _ in rows], device=device)
    first = torch.tensor([c[0] for c in conts], device=device)
    lp, greedy = token_logprobs(last[row_req], first)  # [R]
    lp, greedy = lp.tolist(), greedy.tolist()

    multi = [k for k, c in enumerate(conts) if len(c) > 1]
    if multi:
        # Continue the multi-token rows from a copy of their question's cache.
        cache = output_cache(out)
        sel = row_req[multi]
        cache.batch_select_indices(sel)
        # Feed tokens 0..n-2 of each continuation; they predict tokens 1..n-1.
        tail_ids, tail_mask = right_pad([conts[k][:-1] for k in multi], pad_id, device)
        targets, _ = right_pad([conts[k][1:] for k in multi], pad_id, device)
        width = tail_ids.shape[1]
        ctx_len = mask[sel].sum(-1, keepdim=True)  # [R', 1] real context tokens
        out2 = model(
            input_ids=tail_ids,
            attention_mask=torch.cat([mask[sel], tail_mask], dim=1),
            position_ids=ctx_len + torch.arange(width, device=device),
            use_cache=True,
            **cache_kwargs(model, cache),
        )
        tok_lp, tok_greedy = token_logprobs(out2.logits, targets)  # [R', W]
        valid = tail_mask.bool()
        tail_lp = (tok_lp * valid).sum(-1).tolist()
        tail_greedy = (tok_greedy | ~valid).all(-1).tolist()
        for i, k in enumerate(multi):
            lp[k] += tail_lp[i]
            greedy[k] = greedy[k] and tail_greedy[i]

    results, k = [], 0
    for r in batch:
        n = len(r.continuations)
        results.append(Scores(lp[k:k + n], [len(c) for c in r.continuations], greedy[k:k + n]))
        k += n
    return results


@torch.inference_mode()
def score_requests_full(model, requests: list[Request], *, batch_size: int = 16, pad_id: int = 0) -> list[Scores]:
    """Reference scorer: each (context + continuation) as its own right-padded row.

    Input is (context + continuation)[:-1]; the last len(continuation) positions
    predict the continuation. Slower (the context is recomputed per choice) but
    has no cache logic; tests hold the shared-prefix engine to it.
    """
    device = model_device(model)
    flat = [(i, r.context, c) for i, r in enumerate(requests) for c in r.continuations]
    lps, greedies = [], []
    for start in range(0, len(flat), batch_size):
        chunk = flat[start:start + batch_size]
        seqs = [(ctx + cont)[:-1] for _, ctx, cont in chunk]
        ids, mask = right_pad(seqs, pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        for k, (_, ctx, cont) in enumerate(chunk):
            end = len(seqs[k])
            lp, g = token_logprobs(logits[k, end - len(cont):end], torch.tensor(cont, device=device))
            lps.append(lp.sum().item())
            greedies.append(bool(g.all()))
    results, k = [], 0
    for r in requests:
        n = len(r.continuations)
        results.append(Scores(lps[k:k + n], [len(c) for c in r.continuations], greedies[k:k + n]))
        k += n
    return results
