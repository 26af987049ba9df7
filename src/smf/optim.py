"""Strictly sparse optimizers for memory value tables.

Each step updates only the rows the trainer selected (`set_rows`) and touches nothing
else: rows not selected stay bit-identical, and the cost is O(t · value_dim) whatever
the table size N. (Masking gradients and stepping a dense AdamW does not give this:
its moments and weight decay keep moving old rows.)

- `SparseSGD`: w[r] -= lr · g[r]; no momentum, no weight decay (Lin et al.'s choice).
- `LazyAdam`: Adam whose per-row moments and step counts exist only for rows that
  have been selected, and advance only when they are selected; bias correction uses
  the row's own step count. Its state grows with the rows ever selected, not with N.

Gradients may be sparse (from `embedding_bag(sparse=True)`, possibly uncoalesced) or
dense. With `max_grad_norm`, the selected rows' gradients (over all parameters of the
optimizer) are clipped to that total norm before the update.

A step never waits for the device (no host sync): rows may come with a `valid` mask (a selection
of fixed size, `RowSelector.select_fixed`), whose invalid rows step as rows not selected (they
stay bit-identical and their state does not move), and the step's numbers (`last_stats`) stay
tensors until read. Only LazyAdam waits, when its moment buffers must grow (doubling: rarely).
"""

from __future__ import annotations

import copy

import torch
from torch.optim import Optimizer


def selected_gradient(grad: torch.Tensor, rows: torch.Tensor, fixed_shapes: bool = False) -> torch.Tensor:
    """grad: (N, D) sparse or dense; rows: (t,) sorted, distinct → their gradient (t, D).

    `fixed_shapes`: never wait for the device. Every entry of a sparse gradient is then added (those of rows not
    in `rows` as zeros), which costs what the entries cost: meant for a gradient of about `rows`' entries (SMF's
    factored one); otherwise only the kept entries are gathered (the count of which the host waits for)."""
    if not grad.is_sparse:
        return grad[rows]
    assert grad.sparse_dim() == 1, "expected row-sparse gradients (as embedding_bag gives)"
    index = grad._indices()[0]  # (nnz,), repeats allowed when uncoalesced
    values = grad._values()  # (nnz, D)
    keep = torch.isin(index, rows)
    out = torch.zeros(len(rows), values.shape[1], dtype=values.dtype, device=values.device)
    if not fixed_shapes:
        return out.index_add_(0, torch.searchsorted(rows, index[keep]), values[keep])
    at = torch.searchsorted(rows, index).clamp_(max=len(rows) - 1)
    return out.index_add_(0, at, torch.where(keep[:, None], values, 0))


class SparseRowOptimizer(Optimizer):
    """Shared part: rows to update per parameter, their gradients, clipping, stats."""

    def __init__(self, params, defaults: dict):
        super().__init__(params, defaults)
        self._rows: dict[torch.Tensor, torch.Tensor] = {}
        self._valid: dict[torch.Tensor, torch.Tensor] = {}
        self.last_stats: dict = {}

    def set_rows(self, rows: dict[torch.Tensor, torch.Tensor], valid: dict[torch.Tensor, torch.Tensor] | None = None) -> None:
        """rows: {parameter: sorted distinct row indices (t,)} to update on the next step; `valid`: {parameter: (t,)
        bool}, the rows to update among them (default all)."""
        self._rows, self._valid = rows, valid or {}

    def _update(self, p: torch.Tensor, rows: torch.Tensor, g: torch.Tensor, group: dict, valid: torch.Tensor) -> None:
        raise NotImplementedError

    def compact_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """`p`'s state for the rows that have any, as plain tensors: {"rows": (r,) int64 ascending, and each
        per-row state (r, ...)}, or {} (no state). Nothing of the rows never selected: a checkpoint's share."""
        return {}

    def load_compact_state(self, p: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        """Replace `p`'s state by `state`, as `compact_state` gives it."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got {sorted(state)}")

    @torch.no_grad()
    def step(self, closure=None):
        assert closure is None, "sparse row optimizers take no closure"
        grads = {}
        for group in self.param_groups:
            for p in group["params"]:
                rows = self._rows.get(p)
                if rows is None or len(rows) == 0 or p.grad is None:
                    continue
                rows = rows.to(p.device)
                fixed = p in self._valid
                valid = self._valid[p].to(p.device) if fixed else torch.ones(len(rows), dtype=torch.bool, device=p.device)
                grads[p] = (group, rows, valid, torch.where(valid[:, None], selected_gradient(p.grad, rows, fixed), 0))
        zero = torch.zeros((), dtype=torch.float64, device=next(iter(grads)).device if grads else "cpu")
        norm = torch.sqrt(sum((g.double().pow(2).sum() for *_, g in grads.values()), zero))
        max_norm = self.defaults.get("max_grad_norm")
        # clipped to max_norm where the norm is above it (a device number: no host sync)
        scale = torch.where(norm > max_norm, max_norm / (norm + 1e-6), 1.0) if max_norm else None
        selected, changed = zero.long(), zero.long()
        for p, (group, rows, valid, g) in grads.items():
            before = p[rows].clone()
            self._update(p, rows, g * scale if scale is not None else g, group, valid)
            selected = selected + valid.sum()
            changed = changed + ((p[rows] != before).any(-1) & valid).sum()
        self.last_stats = {"rows_selected": selected, "rows_changed": changed, "grad_norm": norm}
        self._rows, self._valid = {}, {}
        return None

    def read_stats(self) -> dict:
        """The last step's numbers as Python numbers (reading them waits for the device once)."""
        return {k: v.item() if torch.is_tensor(v) else v for k, v in self.last_stats.items()}


class SparseSGD(SparseRowOptimizer):
    def __init__(self, params, lr: float, max_grad_norm: float | None = None):
        super().__init__(params, {"lr": lr, "max_grad_norm": max_grad_norm})

    def _update(self, p, rows, g, group, valid):
        p[rows] = torch.where(valid[:, None], p[rows] - group["lr"] * g, p[rows])

    def state_bytes(self) -> int:
        return 0


class LazyAdam(SparseRowOptimizer):
    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, max_grad_norm: float | None = None):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "max_grad_norm": max_grad_norm})
        self._bounds: dict[torch.Tensor, int] = {}  # parameter → an upper bound of its slots in use, known on the host

    def _slots(self, p: torch.Tensor, rows: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """State slots of `rows`, allocating slots (zero moments, step 0) for the new ones among the `valid` rows
        (default all), in row order; an invalid row gets the scratch slot (the buffers' last), whatever it has.

        Slot buffers grow by doubling, so allocation is amortised O(1) per new row. How many slots are in use
        stays on the device; the host keeps an upper bound (`bound`) and waits for the device only when that
        bound says the buffers may be too small.
        """
        state = self.state[p]
        if not state:
            state["slot"] = torch.full((p.shape[0],), -1, dtype=torch.int64, device=p.device)  # row → slot
            state["used"] = torch.zeros((), dtype=torch.int64, device=p.device)
            state["m"] = p.new_zeros(0, p.shape[1])
            state["v"] = p.new_zeros(0, p.shape[1])
            state["step"] = torch.zeros(0, dtype=torch.int64, device=p.device)
        valid = torch.ones(len(rows), dtype=torch.bool, device=p.device) if valid is None else valid
        if self._bounds.get(p, 1 << 62) + len(rows) > len(state["step"]) - 1:  # the last slot is scratch
            used = int(state["used"])
            self._bounds[p] = used
            if used + len(rows) > len(state["step"]) - 1:
                capacity = max(2 * len(state["step"]), used + len(rows) + 1, 64)
                for key in ("m", "v", "step"):
                    grown = state[key].new_zeros(capacity, *state[key].shape[1:])
                    grown[:used] = state[key][:used]
                    state[key] = grown
        slot = state["slot"]
        at = slot[rows]
        new = valid & (at < 0)
        at = torch.where(new, state["used"] + new.cumsum(0) - 1, at)  # "used" lives with the parameter
        slot[rows] = at
        state["used"] = state["used"] + new.sum()
        self._bounds[p] += len(rows)
        return torch.where(valid, at, len(state["step"]) - 1)

    def load_state_dict(self, state_dict: dict) -> None:
        # Optimizer.load_state_dict casts state tensors to the parameter's dtype; the
        # integer ones (row → slot index, counts, per-row steps) must stay integers. The
        # copy keeps the loaded state from aliasing the source's tensors (updates are in place).
        super().load_state_dict(copy.deepcopy(state_dict))
        params = [p for group in self.param_groups for p in group["params"]]
        for i, saved in state_dict["state"].items():
            for key in ("slot", "used", "step"):
                self.state[params[i]][key] = saved[key].clone().to(params[i].device)
        self._bounds.clear()

    def compact_state(self, p):
        st = self.state.get(p)
        if not st:
            return {}
        rows = (st["slot"] >= 0).nonzero().flatten()
        at = st["slot"][rows]
        return {"rows": rows, "m": st["m"][at], "v": st["v"][at], "step": st["step"][at]}

    def load_compact_state(self, p, state):
        self.state.pop(p, None)
        self._bounds.pop(p, None)
        if not state:
            return
        rows = state["rows"].to(device=p.device, dtype=torch.int64)
        if rows.dim() != 1 or len(rows.unique()) != len(rows) or (len(rows) and not 0 <= int(rows.min()) <= int(rows.max()) < p.shape[0]):
            raise ValueError(f"rows must be distinct indices of the table's {p.shape[0]} rows")
        at = self._slots(p, rows)
        st = self.state[p]
        for key in ("m", "v", "step"):
            if tuple(state[key].shape) != (len(rows), *st[key].shape[1:]):
                raise ValueError(f"{key} has shape {tuple(state[key].shape)}, {len(rows)} rows need {(len(rows), *st[key].shape[1:])}")
            st[key][at] = state[key].to(st[key])

    def rows_with_state(self) -> int:
        """How many rows have Adam state (were ever selected)."""
        return sum(int(st["used"]) for st in self.state.values() if st)

    def _update(self, p, rows, g, group, valid):
        beta1, beta2 = group["betas"]
        s = self._slots(p, rows, valid)
        state = self.state[p]
        m = state["m"][s].mul_(beta1).add_(g, alpha=1 - beta1)
        v = state["v"][s].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step = state["step"][s] + 1
        state["m"][s], state["v"][s], state["step"][s] = m, v, step
        bc1 = (1 - beta1 ** step.double()).to(p.dtype)[:, None]
        bc2 = (1 - beta2 ** step.double()).to(p.dtype)[:, None]
        w = p[rows]
        if group["weight_decay"]:
            w = w * (1 - group["lr"] * group["weight_decay"])
        p[rows] = torch.where(valid[:, None], w - group["lr"] * (m / bc1) / ((v / bc2).sqrt() + group["eps"]), p[rows])

    def state_bytes(self) -> int:
        """Bytes the optimizer state holds: the row → slot index and the allocated moment and
        step buffers (they grow by doubling: up to twice the rows in use, or those and one step's rows)."""
        return sum(t.nbytes for st in self.state.values() for t in st.values() if torch.is_tensor(t))

    def used_state_bytes(self) -> int:
        """Bytes of the state in use: the index plus moments and steps of the rows ever selected."""
        total = 0
        for st in self.state.values():
            if st:
                used = int(st["used"])
                total += st["slot"].nbytes + used * (st["m"].shape[1] * (st["m"].element_size() + st["v"].element_size()) + 8)
        return total


class RowwiseAdagrad(SparseRowOptimizer):
    """Row-wise Adagrad, as FBGEMM/TorchRec train embedding tables: one second-moment scalar
    per row (the running sum of the row's mean squared gradient), no momentum.

    A selected row moves by lr · g / (sqrt(sum) + eps); its state is a single float, so a
    table of N rows holds N floats of state (LazyAdam: two moments per row ever selected,
    plus an index).
    """

    def __init__(self, params, lr: float, eps: float = 1e-8, max_grad_norm: float | None = None):
        super().__init__(params, {"lr": lr, "eps": eps, "max_grad_norm": max_grad_norm})

    def _update(self, p, rows, g, group, valid):
        state = self.state[p]
        if not state:
            state["sum"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
        total = state["sum"]
        total[rows] += torch.where(valid, g.float().pow(2).mean(dim=1), 0)
        p[rows] = torch.where(valid[:, None], p[rows] - group["lr"] * g / (total[rows].sqrt() + group["eps"]).to(g.dtype)[:, None], p[rows])

    def compact_state(self, p):
        st = self.state.get(p)
        if not st:
            return {}
        rows = st["sum"].nonzero().flatten()  # a row whose sum is 0 steps as one without state
        return {"rows": rows, "sum": st["sum"][rows]}

    def load_compact_state(self, p, state):
        self.state.pop(p, None)
        if not state:
            return
        rows = state["rows"].to(device=p.device, dtype=torch.int64)
        if rows.dim() != 1 or tuple(state["sum"].shape) != (len(rows),):
            raise ValueError(f"rows {tuple(rows.shape)} and sums {tuple(state['sum'].shape)} must be two vectors of one length")
        total = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
        total[rows] = state["sum"].to(total)
        self.state[p]["sum"] = total

    def state_bytes(self) -> int:
        return sum(st["sum"].nbytes for st in self.state.values() if st)
