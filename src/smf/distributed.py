"""The processes that train together, and what their steps send each other.

`smf train` (and `train()`) run in several processes under `accelerate launch`
(torch.distributed: gloo on CPUs, NCCL on GPUs). Each process computes the gradient of
its share of the global batch; before the step the gradients are summed over the
processes, so every process takes the same step as one process on the whole batch.

smf sums the gradients itself instead of wrapping the model in DistributedDataParallel:
DDP would all-reduce the whole memory value table (N × d per layer), or fail on NCCL for
its sparse gradient. SMF sums only the access counts (so every process selects the same
rows) and then only the selected rows' gradients (t × d per layer); the other methods
sum their dense gradients in one flat buffer per dtype.

`Comm` counts the bytes of every all-reduce payload a step makes (what one process
contributes; a ring all-reduce moves about twice that over the wire). With one process
nothing is sent and the methods skip the reductions, but the payload a step would send
is still counted, so the log shows it for any process count.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from smf.errors import SmfError


class Comm:
    """Sums tensors over the processes of a run (a no-op for one process) and counts payload bytes."""

    def __init__(self, world: int = 1, rank: int = 0, device: torch.device | str = "cpu"):
        self.world, self.rank, self.device = world, rank, torch.device(device)
        self.step_bytes = 0

    @classmethod
    def of(cls, accelerator) -> "Comm":
        return cls(accelerator.num_processes, accelerator.process_index, accelerator.device)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def note(self, nbytes: int) -> None:
        """Count a payload that one process would send (used where one process skips the reduction)."""
        self.step_bytes += int(nbytes)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the processes, in place (its device must suit the backend); returns it."""
        self.note(tensor.numel() * tensor.element_size())
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_flat_(self, tensors: list[torch.Tensor], bucket_bytes: int = 32 * 2**20) -> None:
        """Sum several tensors in place, packed into flat buffers of about `bucket_bytes`
        (one all-reduce per bucket and dtype, as DDP buckets its gradients)."""
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            if not self.distributed:
                self.note(sum(t.numel() * t.element_size() for t in group))
                continue
            bucket: list[torch.Tensor] = []
            size = 0
            for t in group + [None]:
                if bucket and (t is None or size + t.numel() * t.element_size() > bucket_bytes):
                    flat = self.sum_(torch.cat([x.reshape(-1).to(self.device) for x in bucket]))
                    offset = 0
                    for x in bucket:
                        x.copy_(flat[offset : offset + x.numel()].view_as(x))
                        offset += x.numel()
                    bucket, size = [], 0
                if t is not None:
                    bucket.append(t)
                    size += t.numel() * t.element_size()

    def take_bytes(self) -> int:
        """The payload bytes counted since the last call."""
        n, self.step_bytes = self.step_bytes, 0
        return n

    def same(self, values: list[int], what: str, fix: str) -> None:
        """Refuse (on every process) unless every process holds the same `values`."""
        if not self.distributed:
            return

        mine = torch.tensor([len(values), *values], dtype=torch.int64, device=self.device)
        size = torch.tensor([len(mine)], dtype=torch.int64, device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world)]
        dist.all_gather(sizes, size)
        longest = int(max(s.item() for s in sizes))
        padded = torch.full((longest,), -1, dtype=torch.int64, device=self.device)
        padded[: len(mine)] = mine
        gathered = [torch.zeros_like(padded) for _ in range(self.world)]
        dist.all_gather(gathered, padded)
        seen = [g.tolist() for g in gathered]
        if any(s != seen[0] for s in seen):
            raise SmfError(f"the {self.world} processes disagree on {what} ({', '.join(f'process {r}: {s[1:s[0] + 1]}' for r, s in enumerate(seen))}); {fix}")


def check_split(batch_size: int, grad_accum: int, world: int) -> None:
    """The global batch must split into `world` equal shares of `grad_accum` micro-batches each."""
    if world > batch_size:
        raise SmfError(f"{world} processes are more than the global batch of {batch_size} examples (each process needs a share); "
                       f"use --batch-size of at least {world}, or fewer processes (--num_processes)")
    if batch_size % (world * grad_accum):
        raise SmfError(f"the global batch of {batch_size} does not split into {world} processes × {grad_accum} micro-batches "
                       f"of equal size; use a --batch-size that is a multiple of {world * grad_accum}")
