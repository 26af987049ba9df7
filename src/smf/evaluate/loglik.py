"""Log-likelihood of continuations after a shared context: the multiple-choice engine.

A request is one question: a context and the continuations (choices) to score after
it. The packed engine scores a whole question in one row of one forward pass:

    row:        [ context ........ ][ choice 0 tail ][ choice 1 tail ] ...
    positions:   0 1 ...       L-1   L L+1 ...         L L+1 ...
    attends to:  causal context      context + its own tail, causally

Every choice's first token is read from the context's last position; a choice's
tail (its tokens but the last) is fed after the context with positions restarting
at L and a mask that hides the other choices, so each choice sees exactly the
sequence context + choice, as if scored alone. Questions are batched (left-padded,
longest first); single-token choices (` A`..` D`) add nothing to the row. This
needs a custom 4D attention mask, which HF's eager and SDPA attention accept;
other attention kernels (flash attention) fall back to `score_requests_full`, the
plain reference: one (context + continuation) row per choice, as lm-eval runs them.

Both return, per continuation, the summed log-probability of its tokens and
whether greedy decoding would have produced it (lm-eval's `is_greedy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from smf.evaluate.calls import logits_to_keep_kwargs, model_device, right_pad, supports_custom_mask, token_logprobs


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


def tokens_fed(request: Request) -> int:
    """Tokens the packed engine feeds for a request: the context and every choice's tail."""
    return len(request.context) + sum(len(c) - 1 for c in request.continuations)


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
    """Score every continuation of every request, one packed row per question.

    `batch_size` counts questions per forward. `on_batch(n_requests, n_tokens)` is
    called after each batch (progress and throughput). Results are in input order.
    """
    for r in requests:
        assert r.context and r.continuations and all(r.continuations), "empty context or continuation"
    requests = [_truncate(r, max_length) for r in requests]
    if not supports_custom_mask(model):
        results = score_requests_full(model, requests, batch_size=batch_size, pad_id=pad_id)
        if on_batch is not None:
            on_batch(len(requests), sum(len(r.context) + len(c) - 1 for r in requests for c in r.continuations))
        return results
    device = model_device(model)
    # Longest rows first (like lm-eval): similar lengths share a batch, less padding.
    order = sorted(range(len(requests)), key=lambda i: -tokens_fed(requests[i]))
    results: list[Scores | None] = [None] * len(requests)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = [requests[i] for i in idx]
        for i, scores in zip(idx, _score_packed(model, batch, pad_id, device)):
            results[i] = scores
        if on_batch is not None:
            on_batch(len(batch), sum(tokens_fed(r) for r in batch))
    return results  # type: ignore[return-value]


def _score_packed(model, batch: list[Request], pad_id: int, device) -> list[Scores]:
    width = max(tokens_fed(r) for r in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    segment = torch.full((len(batch), width), -1, dtype=torch.long)  # -1 pad, 0 context, j+1 tail of choice j
    positions = torch.zeros((len(batch), width), dtype=torch.long)
    # Flat list of scored tokens: (row, column of the logits that predict it, token, choice number).
    rows, cols, targets, owner = [], [], [], []
    n_choices = 0
    for b, r in enumerate(batch):
        col = width - tokens_fed(r)  # left padding
        L = len(r.context)
        ids[b, col:col + L] = torch.tensor(r.context)
        segment[b, col:col + L] = 0
        positions[b, col:col + L] = torch.arange(L)
        last_context = col + L - 1
        col += L
        for j, cont in enumerate(r.continuations):
            tail = cont[:-1]
            ids[b, col:col + len(tail)] = torch.tensor(tail, dtype=torch.long)
            segment[b, col:col + len(tail)] = j + 1
            positions[b, col:col + len(tail)] = torch.arange(L, L + len(tail))
            # Token 0 is predicted at the context's last column, token k at the column of token k-1.
            predictors = [last_context] + list(range(col, col + len(tail)))
            rows += [b] * len(cont)
            cols += predictors
            targets += cont
            owner += [n_choices] * len(cont)
            col += len(tail)
            n_choices += 1

    # A query sees keys that are real, before or at it, and in the context or its own tail.
    seg_q, seg_k = segment[:, :, None], segment[:, None, :]
    allowed = (seg_k >= 0) & ((seg_k == 0) | (seg_k == seg_q)) & (positions[:, None, :] <= positions[:, :, None])
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)

    # Only the last `keep` columns predict anything: skip the LM head on the rest.
    keep = width - min(cols)
    logits = model(
        input_ids=ids.to(device),
        attention_mask=mask[:, None].to(device),  # [B, 1, T, T]
        position_ids=positions.to(device),
        use_cache=False,
        **logits_to_keep_kwargs(model, keep),
    ).logits[:, -keep:]  # [B, keep, V]
    picked = logits[torch.tensor(rows, device=device), torch.tensor(cols, device=device) - (width - keep)]  # [N, V]
    lp, greedy = token_logprobs(picked, torch.tensor(targets, device=device))  # [N]
    owner_t = torch.tensor(owner, device=device)
    sums = torch.zeros(n_choices, dtype=torch.float64, device=device).index_add_(0, owner_t, lp.double())
    misses = torch.zeros(n_choices, dtype=torch.long, device=device).index_add_(0, owner_t, (~greedy).long())
    sums, all_greedy = sums.tolist(), (misses == 0).tolist()

    results, k = [], 0
    for r in batch:
        n = len(r.continuations)
        results.append(Scores(sums[k:k + n], [len(c) for c in r.continuations], all_greedy[k:k + n]))
        k += n
    return results


@torch.inference_mode()
def score_requests_full(model, requests: list[Request], *, batch_size: int = 16, pad_id: int = 0) -> list[Scores]:
    """Reference scorer: each (context + continuation) as its own right-padded row.

    Input is (context + continuation)[:-1]; the last len(continuation) positions
    predict the continuation. Slower (the context is recomputed per choice) but
    needs nothing beyond a plain forward; tests hold the packed engine to it.
    """
    device = model_device(model)
    flat = [(r.context, c) for r in requests for c in r.continuations]
    lps, greedies = [], []
    for start in range(0, len(flat), batch_size):
        chunk = flat[start:start + batch_size]
        seqs = [(ctx + cont)[:-1] for ctx, cont in chunk]
        ids, mask = right_pad(seqs, pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        for k, (_, cont) in enumerate(chunk):
            end = len(seqs[k])
            lp, g = token_logprobs(logits[k, end - len(cont):end], torch.tensor(cont, device=device))
            lps.append(lp.double().sum().item())
            greedies.append(bool(g.all()))
    results, k = [], 0
    for r in requests:
        n = len(r.continuations)
        results.append(Scores(lps[k:k + n], [len(c) for c in r.continuations], greedies[k:k + n]))
        k += n
    return results
