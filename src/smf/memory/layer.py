"""The product-key memory layer (Lample et al. 2019; Berges et al. 2024).

For each token x (hidden size d):

    x̂  = x / rms(x)                                   unit RMS, whatever the FFN input scale
    q   = W_q x̂, split into `heads` queries, each into halves q1, q2 (key_dim / 2 each)
    s1  = q1 · K1ᵀ, s2 = q2 · K2ᵀ                      two sub-key tables of sqrt(N) rows per head
    top-k of s1 and of s2 → k×k candidate sums s1[i] + s2[j] for row i·sqrt(N) + j
    top-k of the candidates → rows r_1..r_k, scores σ_1..σ_k;  w = softmax(σ)
    y   = Σ_heads Σ_k w_k · V[r_k]                      embedding_bag(sum, sparse=True)
    out = W_o (y ⊙ silu(W_g x̂))                        Memory+ gating

Only the k·heads value rows a token reads receive gradient, and the gradient of V is a
sparse tensor that names them. Cost per token: O((sqrt(N) + k²)·key_dim) for the lookup
and O(heads·k·value_dim) for the read, so memory size barely matters.

That sparse gradient still holds one value_dim row per read (heads·k per token: 64 times the
size of the layer's output gradient). A trainer that updates only rows it chooses after the
backward pass can ask for the gradient in factored form instead (`factored_grad = True`):
the backward pass keeps each read's row and weight and the output gradient per token, V.grad
stays None, and `selected_grad(rows)` sums the gradient of just the rows chosen.

The published SMF-on-Qwen study's layer is a variant of this one (`variant = "published"`):
the query, gate and output projections have biases, x̂ is x itself (no re-normalisation of
the FFN input, already the output of the decoder's post-attention norm), and its
initialisation is the study's (`reset_parameters`). With biases the layer is not a no-op at
the start even with zero values; `muted` switches it off instead (`MemoryMLP` gives FFN(x)).

Each layer can record which rows the real tokens of the last forward pass read
(`record = True`); positions whose attention mask is 0 (padding) are left out, unless
`count_padding` is set (as the published study counts: every position of the batch). Recording
keeps the rows and the mask as they are: `read_counts()` turns them into per-row counts
with fixed-shape operations, so a recorded forward never waits for the device (no host
sync); `last_rows`, the rows of real tokens, is computed on first use.

This file imports only torch: smf copies it into every model folder it saves, where the
folder's `modeling_smf.py` uses it (transformers' trust_remote_code), smf or not.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _FactoredRead(torch.autograd.Function):
    """y = Σ_j w_j · V[r_j] per token, whose backward pass keeps V's gradient factored.

    forward(rows (n, r), weights (n, r), values (N, d), memory) → y (n, d). The backward pass
    appends (rows, weights, grad_y) to `memory.grad_parts` and gives V no gradient; the weights'
    gradient (needed below the layer when its input requires grad) is dot(grad_y, V[r_j]),
    gathered a few tokens at a time so no (n, r, d) tensor is ever whole.
    """

    CHUNK = 1 << 22  # elements of V's rows gathered at once in the backward pass (16 MiB in fp32)

    @staticmethod
    def forward(ctx, rows, weights, values, memory):
        ctx.memory = memory
        ctx.save_for_backward(rows, weights, values)
        return F.embedding_bag(rows, values, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx, grad_y):
        rows, weights, values = ctx.saved_tensors
        ctx.memory.grad_parts.append((rows, weights.detach(), grad_y))
        grad_w = None
        if ctx.needs_input_grad[1]:
            step = max(1, _FactoredRead.CHUNK // max(1, rows.shape[1] * values.shape[1]))
            grad_w = torch.cat([torch.einsum("nrd,nd->nr", values[rows[i : i + step]], grad_y[i : i + step].to(values.dtype))
                                for i in range(0, rows.shape[0], step)]).to(weights.dtype)
        return None, grad_w, None, None


class ProductKeyMemory(nn.Module):
    """config: a MemoryConfig, or any object with its fields (slots, heads, topk, key_dim,
    value_dim, value_init, value_init_std; variant, absent in folders older than it, is
    "smf"). The parameters start uninitialised (on the meta device, so building draws no
    random numbers); `reset_parameters(generator)` initialises them, or a checkpoint is
    loaded into them."""

    def __init__(self, hidden_size: int, config):
        super().__init__()
        c = config
        self.hidden_size = hidden_size
        self.slots, self.heads, self.topk, self.n_sub = c.slots, c.heads, c.topk, math.isqrt(c.slots)
        self.half = c.key_dim // 2
        self.value_dim = c.value_dim or hidden_size
        self.value_init, self.value_init_std = c.value_init, c.value_init_std
        self.eps = 1e-6
        self.variant = getattr(c, "variant", "smf")
        if self.variant not in ("smf", "published"):
            raise ValueError(f"unknown memory layer variant {self.variant!r}: smf or published")
        bias = self.published  # the study's projections have biases
        self.q_proj = nn.Linear(hidden_size, c.heads * c.key_dim, bias=bias, device="meta")
        # (heads, 2 halves, sqrt(N) sub-keys, key_dim/2)
        self.keys = nn.Parameter(torch.empty(c.heads, 2, self.n_sub, self.half, device="meta"))
        self.values = nn.Parameter(torch.empty(c.slots, self.value_dim, device="meta"))
        self.gate_proj = nn.Linear(hidden_size, self.value_dim, bias=bias, device="meta")
        self.out_proj = nn.Linear(self.value_dim, hidden_size, bias=bias, device="meta")
        # An optional learnable output scale alpha (a 0-d parameter), initialised at `scale`.
        self.scale_init = getattr(c, "scale", None)
        self.scale = nn.Parameter(torch.empty((), device="meta")) if self.scale_init is not None else None

        # Row-sparse value gradients (what the sparse optimizers want); dense optimizers
        # such as AdamW (healing, full finetuning) switch this off.
        self.sparse_grad = True
        # Or no V.grad at all, but its factors per backward pass (see the module docstring):
        # `selected_grad(rows)` sums them, `grad_parts.clear()` forgets them.
        self.factored_grad = False
        self.grad_parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        # Access recording (see module docstring). token_mask is set before each forward
        # pass by the retrofit's hook on the decoder: (B, T_total) with 1 for real tokens.
        self.record = False
        self.count_padding = False  # count every position's reads, padding included (the published study)
        self.muted = False  # MemoryMLP skips the memory (FFN(x) alone), see memory_reading_zeros
        self.token_mask: torch.Tensor | None = None
        # A narrower mask for recording only (B, T), e.g. the positions that predict an answer;
        # the trainer sets it before a forward pass and clears it after.
        self.record_mask: torch.Tensor | None = None
        self._read: tuple[torch.Tensor, torch.Tensor | None] | None = None  # (rows (B, T, heads*k), mask (B, T))
        self._last_rows: torch.Tensor | None = None

    @property
    def published(self) -> bool:
        """Whether this is the published study's layer (biases, no input re-normalisation, its init)."""
        return self.variant == "published"

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise every parameter on the CPU, drawing only from `generator`: projections
        and keys with unit-variance outputs for unit inputs, values zero (or normal); the
        published variant as the study draws them (`_reset_published`)."""
        if self.published:
            return self._reset_published(generator)
        d, v = self.hidden_size, self.value_dim

        def normal(*shape: int, std: float) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator) * std)

        self.q_proj.weight = normal(self.heads * 2 * self.half, d, std=d**-0.5)
        self.keys = normal(self.heads, 2, self.n_sub, self.half, std=self.half**-0.5)
        if self.value_init == "zeros":
            self.values = nn.Parameter(torch.zeros(self.slots, v))
        else:
            self.values = normal(self.slots, v, std=self.value_init_std)
        self.gate_proj.weight = normal(v, d, std=d**-0.5)
        self.out_proj.weight = normal(d, v, std=v**-0.5)
        if self.scale_init is not None:
            self.scale = nn.Parameter(torch.tensor(float(self.scale_init)))

    @torch.no_grad()
    def _reset_published(self, generator: torch.Generator | None) -> None:
        """The published study's initialisation (d = hidden size, v = value width, K = key_dim):
        keys U(±1/√K); values N(0, 1/√v); the query weight Xavier-uniform, bound √(6 / (d + heads·K));
        the gate and output weights N(0, 1/√(their output width)); every bias U(±1/√(its layer's
        input width)), as torch's default Linear; the output scale at `scale`."""
        d, v, q = self.hidden_size, self.value_dim, self.heads * 2 * self.half

        def uniform(*shape: int, bound: float) -> nn.Parameter:
            return nn.Parameter((torch.rand(*shape, generator=generator) * 2 - 1) * bound)

        def normal(*shape: int, std: float) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator) * std)

        self.keys = uniform(self.heads, 2, self.n_sub, self.half, bound=(2 * self.half) ** -0.5)
        self.values = normal(self.slots, v, std=v**-0.5)
        self.q_proj.weight = uniform(q, d, bound=math.sqrt(6 / (d + q)))
        self.q_proj.bias = uniform(q, bound=d**-0.5)
        self.gate_proj.weight = normal(v, d, std=v**-0.5)
        self.gate_proj.bias = uniform(v, bound=d**-0.5)
        self.out_proj.weight = normal(d, v, std=d**-0.5)
        self.out_proj.bias = uniform(d, bound=v**-0.5)
        if self.scale_init is not None:
            self.scale = nn.Parameter(torch.tensor(float(self.scale_init)))

    def extra_repr(self) -> str:
        variant = ", variant=published" if self.published else ""
        return f"slots={self.slots}, heads={self.heads}, topk={self.topk}, key_dim={2 * self.half}, value_dim={self.value_dim}{variant}"

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., d) → x / rms(x), computed in fp32; the published variant's x̂ is x itself."""
        if self.published:
            return x
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def lookup(self, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """xn: (n, d) normalised tokens → rows (n, heads, k) int64, weights (n, heads, k)."""
        rows, best = self.scored_lookup(xn)
        return rows, best.float().softmax(-1).to(xn.dtype)

    def scored_lookup(self, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """xn: (n, d) normalised tokens → rows (n, heads, k) int64 and their raw scores (n, heads, k),
        best first within each head (before the softmax)."""
        n, k, m = xn.shape[0], self.topk, self.n_sub
        q = self.q_proj(xn).view(n, self.heads, 2, self.half)
        scores = torch.einsum("nhcd,hcmd->nhcm", q, self.keys.to(q.dtype))  # (n, H, 2, sqrt N)
        half_scores, half_idx = scores.topk(k, dim=-1)  # (n, H, 2, k)
        cand = (half_scores[:, :, 0, :, None] + half_scores[:, :, 1, None, :]).flatten(2)  # (n, H, k*k)
        cand_rows = (half_idx[:, :, 0, :, None] * m + half_idx[:, :, 1, None, :]).flatten(2)
        best, pos = cand.topk(k, dim=-1)  # (n, H, k)
        return cand_rows.gather(-1, pos), best

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d) → (B, T, d)."""
        B, T, d = x.shape
        xn = self.normalize(x.reshape(B * T, d))
        rows, weights = self.lookup(xn)
        flat_rows, flat_weights = rows.view(B * T, -1), weights.view(B * T, -1).to(self.values.dtype)
        if self.factored_grad and self.values.requires_grad and torch.is_grad_enabled():
            y = _FactoredRead.apply(flat_rows, flat_weights, self.values, self)
        else:
            y = F.embedding_bag(flat_rows, self.values, per_sample_weights=flat_weights, mode="sum", sparse=self.sparse_grad)
        # y: (B*T, value_dim)
        out = self.out_proj(y.to(xn.dtype) * F.silu(self.gate_proj(xn)))
        if self.scale is not None:
            out = out * self.scale.to(out.dtype)
        if self.record:
            self._record(rows.view(B, T, -1))
        return out.view(B, T, d)

    @torch.no_grad()
    def selected_grad(self, rows: torch.Tensor) -> torch.Tensor:
        """rows: (t,) sorted, distinct → V's gradient on them (t, value_dim), summed over every
        backward pass since `grad_parts` was last cleared (factored_grad).

        Per token, the reads of chosen rows become a (tokens, t) matrix of weights, and the
        gradient is its transpose times the output gradient: fixed shapes (no host sync), and a
        few tokens at a time, so no (tokens, t) or (tokens, reads, d) tensor is ever whole.
        """
        t = len(rows)
        out = self.values.new_zeros(t, self.values.shape[1])
        if t == 0:
            return out
        rows = rows.to(self.values.device).contiguous()
        step = max(1, _FactoredRead.CHUNK // (t + 1))
        for read, weights, grad_y in self.grad_parts:
            for i in range(0, read.shape[0], step):
                r = read[i : i + step]
                at = torch.searchsorted(rows, r).clamp_(max=t - 1)
                at = torch.where(rows[at] == r, at, t)  # a row not chosen lands in column t, dropped
                a = out.new_zeros(r.shape[0], t + 1).scatter_add_(1, at, weights[i : i + step].to(out.dtype))
                out.addmm_(a[:, :t].T, grad_y[i : i + step].to(out.dtype))
        return out

    def _record(self, rows: torch.Tensor) -> None:
        """rows: (B, T, heads*k). Keep them with the mask of real (unpadded) tokens; no sync."""
        mask = self.record_mask if self.record_mask is not None else None if self.count_padding else self.token_mask
        if mask is not None:
            # With a KV cache the mask spans past and present tokens; this pass is the last T.
            mask = mask[:, -rows.shape[1] :].to(device=rows.device, dtype=torch.bool)
        self._read = (rows.detach(), mask)
        self._last_rows = None

    @property
    def last_rows(self) -> torch.Tensor | None:
        """Rows read by the real tokens of the last recorded pass: (real tokens, heads*k)."""
        if self._last_rows is None and self._read is not None:
            rows, mask = self._read
            self._last_rows = rows.reshape(-1, rows.shape[-1]) if mask is None else rows[mask]  # syncs (data-sized)
        return self._last_rows

    @last_rows.setter
    def last_rows(self, value: torch.Tensor | None) -> None:
        self._read, self._last_rows = None, value

    def read_counts(self) -> torch.Tensor:
        """How often the real tokens of the last recorded pass read each row: (slots,) int64,
        on the device, without a host sync (a scatter-add of the mask over the rows read)."""
        assert self._read is not None, "set record = True before the forward pass"
        rows, mask = self._read
        weight = torch.ones_like(rows) if mask is None else mask[..., None].expand_as(rows).to(rows.dtype)
        return torch.zeros(self.slots, dtype=torch.int64, device=rows.device).index_add_(0, rows.flatten(), weight.flatten())

    def access_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows read in the last recorded pass and how often: (rows (u,), counts (u,))."""
        assert self.last_rows is not None, "set record = True before the forward pass"
        return torch.unique(self.last_rows, return_counts=True)


class MemoryMLP(nn.Module):
    """A decoder layer's FFN with a memory: FFN(x) + mem(x) (additive) or mem(x) (replacement)."""

    def __init__(self, ffn: nn.Module | None, memory: ProductKeyMemory):
        super().__init__()
        self.ffn = ffn
        self.memory = memory

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory.muted and self.ffn is not None:
            return self.ffn(x)
        out = self.memory(x)
        return out if self.ffn is None else self.ffn(x) + out
