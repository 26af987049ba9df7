"""MemoryConfig: where the memory layers go and how big they are.

Defaults follow the SMF-on-Qwen study (layers 6, 12, 18 of Qwen2.5-0.5B; 16,384
slots; 4 heads; top-k 16; key dim 256; additive). Serialized as `smf_memory.json`
beside a retrofitted model's weights.
"""

from __future__ import annotations

import math
from dataclasses import InitVar, dataclass

from smf.config import Config, choice, setting
from smf.errors import SmfError

MODES = ("additive", "replacement")
VALUE_INITS = ("zeros", "normal")


@dataclass
class MemoryConfig(Config):
    """Product-key memory layers to add to a decoder."""

    layers: tuple[int, ...] = setting((6, 12, 18), "decoder layer indices (0-based) whose FFN gets a memory")
    slots: int = setting(16384, "value rows per memory layer, N; a perfect square (two sub-key tables of sqrt(N) rows)")
    heads: int = setting(4, "query heads; each reads top-k rows and their reads are summed")
    topk: int = setting(16, "rows read per head and token (k); at most sqrt(N)")
    key_dim: int = setting(256, "query/key size per head; each of the two sub-keys has key_dim / 2")
    value_dim: int | None = setting(None, "width of a value row; none = the model's hidden size")
    mode: str = setting("additive", "additive: h = FFN(x) + mem(x), unchanged at the start; replacement: mem replaces the FFN (heal it)")
    value_init: str | None = setting(None, "zeros or normal; none = zeros for additive, normal for replacement")
    value_init_std: float = setting(0.02, "standard deviation of normal value init")
    seed: int = setting(0, "seed of the initial keys and projections, so a retrofit is repeatable")
    scale: float | None = setting(None, "a learnable output scale alpha (mem(x) becomes alpha * mem(x)) initialised at this value, "
                                        "as the published study's additive arm (0.01 with normal values); none = no scale")
    checked: InitVar[bool] = True

    def __post_init__(self, checked: bool) -> None:
        self.layers = tuple(int(i) for i in self.layers)
        if self.value_init is None:
            self.value_init = "zeros" if self.mode == "additive" else "normal"
        if checked:
            self.check()

    @property
    def sub_keys(self) -> int:
        """Rows of each sub-key table: sqrt(slots)."""
        return math.isqrt(self.slots)

    def check(self, where: str = "memory", num_layers: int | None = None) -> None:
        """Check the config; with `num_layers`, also that the layer indices exist."""
        if not self.layers:
            raise SmfError(f"{where}: give at least one memory layer index, e.g. --layers 6,12,18")
        if len(set(self.layers)) != len(self.layers):
            raise SmfError(f"{where}: memory layers {list(self.layers)} repeat an index; give each layer once")
        if self.slots < 4 or math.isqrt(self.slots) ** 2 != self.slots:
            near = max(2, round(math.sqrt(max(self.slots, 4)))) ** 2
            raise SmfError(f"{where}: memory slots must be a perfect square (product keys use sqrt(N) sub-keys); {self.slots} is not, try {near}")
        if self.heads < 1:
            raise SmfError(f"{where}: memory heads must be >= 1, got {self.heads}")
        if not 1 <= self.topk <= self.sub_keys:
            raise SmfError(f"{where}: memory top-k must be between 1 and sqrt(slots) = {self.sub_keys}, got {self.topk}")
        if self.key_dim < 2 or self.key_dim % 2:
            raise SmfError(f"{where}: memory key dim must be even (two half-keys), got {self.key_dim}")
        if self.value_dim is not None and self.value_dim < 1:
            raise SmfError(f"{where}: memory value dim must be >= 1, got {self.value_dim}")
        choice(self.mode, MODES, "memory mode", where)
        if self.scale is not None and not math.isfinite(self.scale):
            raise SmfError(f"{where}: memory scale must be a finite number or null, got {self.scale}")
        choice(self.value_init, VALUE_INITS, "memory value init", where)
        if num_layers is not None:
            bad = [i for i in self.layers if not 0 <= i < num_layers]
            if bad:
                raise SmfError(f"{where}: memory layer index {bad[0]} does not exist: the model has {num_layers} layers (0..{num_layers - 1})")
