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

Each layer can record which rows the real tokens of the last forward pass read
(`record = True`); positions whose attention mask is 0 (padding) are left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init

from smf.memory.config import MemoryConfig


class ProductKeyMemory(nn.Module):
    def __init__(self, hidden_size: int, config: MemoryConfig, generator: torch.Generator | None = None):
        super().__init__()
        c = config
        self.hidden_size = hidden_size
        self.slots, self.heads, self.topk, self.n_sub = c.slots, c.heads, c.topk, c.sub_keys
        self.half = c.key_dim // 2
        self.value_dim = c.value_dim or hidden_size
        self.eps = 1e-6

        def normal(*shape: int, std: float) -> torch.Tensor:
            return torch.randn(*shape, generator=generator) * std

        # skip_init: no default init, so retrofitting never draws from the global RNG
        self.q_proj = skip_init(nn.Linear, hidden_size, c.heads * c.key_dim, bias=False)
        self.q_proj.weight.data = normal(c.heads * c.key_dim, hidden_size, std=hidden_size**-0.5)
        # (heads, 2 halves, sqrt(N) sub-keys, key_dim/2): unit-variance scores for unit queries
        self.keys = nn.Parameter(normal(c.heads, 2, self.n_sub, self.half, std=self.half**-0.5))
        if c.value_init == "zeros":
            values = torch.zeros(c.slots, self.value_dim)
        else:
            values = normal(c.slots, self.value_dim, std=c.value_init_std)
        self.values = nn.Parameter(values)
        self.gate_proj = skip_init(nn.Linear, hidden_size, self.value_dim, bias=False)
        self.gate_proj.weight.data = normal(self.value_dim, hidden_size, std=hidden_size**-0.5)
        self.out_proj = skip_init(nn.Linear, self.value_dim, hidden_size, bias=False)
        self.out_proj.weight.data = normal(hidden_size, self.value_dim, std=self.value_dim**-0.5)

        # Row-sparse value gradients (what the sparse optimizers want); dense optimizers
        # such as AdamW (healing, full finetuning) switch this off.
        self.sparse_grad = True
        # Access recording (see module docstring). token_mask is set before each forward
        # pass by the retrofit's hook on the decoder: (B, T_total) with 1 for real tokens.
        self.record = False
        self.token_mask: torch.Tensor | None = None
        self.last_rows: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"slots={self.slots}, heads={self.heads}, topk={self.topk}, key_dim={2 * self.half}, value_dim={self.value_dim}"

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., d) → x / rms(x), computed in fp32."""
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def lookup(self, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """xn: (n, d) normalised tokens → rows (n, heads, k) int64, weights (n, heads, k)."""
        n, k, m = xn.shape[0], self.topk, self.n_sub
        q = self.q_proj(xn).view(n, self.heads, 2, self.half)
        scores = torch.einsum("nhcd,hcmd->nhcm", q, self.keys.to(q.dtype))  # (n, H, 2, sqrt N)
        half_scores, half_idx = scores.topk(k, dim=-1)  # (n, H, 2, k)
        cand = (half_scores[:, :, 0, :, None] + half_scores[:, :, 1, None, :]).flatten(2)  # (n, H, k*k)
        cand_rows = (half_idx[:, :, 0, :, None] * m + half_idx[:, :, 1, None, :]).flatten(2)
        best, pos = cand.topk(k, dim=-1)  # (n, H, k)
        rows = cand_rows.gather(-1, pos)
        return rows, best.float().softmax(-1).to(xn.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d) → (B, T, d)."""
        B, T, d = x.shape
        xn = self.normalize(x.reshape(B * T, d))
        rows, weights = self.lookup(xn)
        y = F.embedding_bag(
            rows.view(B * T, -1),
            self.values,
            per_sample_weights=weights.view(B * T, -1).to(self.values.dtype),
            mode="sum",
            sparse=self.sparse_grad,
        )  # (B*T, value_dim)
        out = self.out_proj(y.to(xn.dtype) * F.silu(self.gate_proj(xn)))
        if self.record:
            self._record(rows.view(B, T, -1))
        return out.view(B, T, d)

    def _record(self, rows: torch.Tensor) -> None:
        """rows: (B, T, heads*k). Keep the rows read by real (unpadded) tokens."""
        mask = self.token_mask
        if mask is None:
            self.last_rows = rows.reshape(-1, rows.shape[-1]).detach()
            return
        # With a KV cache the mask spans past and present tokens; this pass is the last T.
        mask = mask[:, -rows.shape[1] :].to(device=rows.device, dtype=torch.bool)
        self.last_rows = rows[mask].detach()  # (real tokens, heads*k)

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
        out = self.memory(x)
        return out if self.ffn is None else self.ffn(x) + out
