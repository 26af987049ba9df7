"""MemoryConfig: where the memory layers go and how big they are.

Defaults follow the SMF-on-Qwen study (layers 6, 12, 18 of Qwen2.5-0.5B; 16,384
slots; 4 heads; top-k 16; key dim 256; additive). Serialized as `smf_memory.json`
beside a retrofitted model's weights.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from smf.errors import SmfError

MODES = ("additive", "replacement")
VALUE_INITS = ("zeros", "normal")


@dataclass
class MemoryConfig:
    """Product-key memory layers to add to a decoder.

    layers: decoder layer indices whose FFN gets a memory (0-based).
    slots: value rows per memory layer, N; a perfect square (two sub-key tables of
        sqrt(N) rows per head form the N product keys).
    heads: query heads; each reads `topk` rows, and their reads are summed.
    topk: rows read per head and token (k); at most sqrt(N).
    key_dim: query/key size per head; each of the two sub-keys has key_dim / 2.
    value_dim: width of a value row; None means the model's hidden size.
    mode: "additive" (h = FFN(x) + mem(x); zero values leave the model unchanged)
        or "replacement" (mem replaces the FFN; needs healing).
    value_init: "zeros" (additive default: outputs unchanged at the start) or
        "normal" (std value_init_std; the replacement default).
    seed: seeds the initial keys and projections, so a retrofit is repeatable.
    """

    layers: tuple[int, ...] = (6, 12, 18)
    slots: int = 16384
    heads: int = 4
    topk: int = 16
    key_dim: int = 256
    value_dim: int | None = None
    mode: str = "additive"
    value_init: str | None = None
    value_init_std: float = 0.02
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.layers = tuple(int(i) for i in self.layers)
        if self.value_init is None:
            self.value_init = "zeros" if self.mode == "additive" else "normal"
        self.validate()

    @property
    def sub_keys(self) -> int:
        """Rows of each sub-key table: sqrt(slots)."""
        return math.isqrt(self.slots)

    def validate(self, num_layers: int | None = None) -> None:
        """Check the config; with `num_layers`, also that the layer indices exist."""
        if self.extra:
            raise SmfError(f"unknown memory option(s): {', '.join(sorted(self.extra))}")
        if not self.layers:
            raise SmfError("memory layers: give at least one layer index, e.g. --layers 6,12,18")
        if len(set(self.layers)) != len(self.layers):
            raise SmfError(f"memory layers {list(self.layers)} repeat an index; give each layer once")
        if self.slots < 4 or math.isqrt(self.slots) ** 2 != self.slots:
            near = max(2, round(math.sqrt(max(self.slots, 4)))) ** 2
            raise SmfError(f"memory slots must be a perfect square (product keys use sqrt(N) sub-keys); {self.slots} is not, try {near}")
        if self.heads < 1:
            raise SmfError(f"memory heads must be >= 1, got {self.heads}")
        if not 1 <= self.topk <= self.sub_keys:
            raise SmfError(f"memory top-k must be between 1 and sqrt(slots) = {self.sub_keys}, got {self.topk}")
        if self.key_dim < 2 or self.key_dim % 2:
            raise SmfError(f"memory key dim must be even (two half-keys), got {self.key_dim}")
        if self.value_dim is not None and self.value_dim < 1:
            raise SmfError(f"memory value dim must be >= 1, got {self.value_dim}")
        if self.mode not in MODES:
            raise SmfError(f"memory mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if self.value_init not in VALUE_INITS:
            raise SmfError(f"memory value init must be one of {', '.join(VALUE_INITS)}, got '{self.value_init}'")
        if num_layers is not None:
            bad = [i for i in self.layers if not 0 <= i < num_layers]
            if bad:
                raise SmfError(f"memory layer index {bad[0]} does not exist: the model has {num_layers} layers (0..{num_layers - 1})")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MemoryConfig":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})
