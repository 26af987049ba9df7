"""MemoryConfig: where the memory layers go and how big they are.

Defaults are the offline study's memory (studies/offline): 3 layers at about 27 %, 47 % and
67 % of the model's depth (`depth_layers`: 8, 14, 20 of SmolLM2-135M's 30), 65,536 slots,
4 heads, top-k 16, key dim 256, additive. Serialized, with its layers resolved, as
`smf_memory.json` beside a retrofitted model's weights.
"""

from __future__ import annotations

import math
from dataclasses import InitVar, dataclass, replace
from typing import Literal

from smf.config import Config, check_choices, setting
from smf.errors import SmfError

DEPTH_FRACTIONS = (4 / 15, 7 / 15, 2 / 3)  # the offline study's layers 8, 14, 20 of 30, as fractions of the depth


def depth_layers(num_layers: int) -> tuple[int, ...]:
    """The default memory layers of a decoder of `num_layers` layers: DEPTH_FRACTIONS of its depth."""
    return tuple(sorted({min(num_layers - 1, round(num_layers * f)) for f in DEPTH_FRACTIONS}))


@dataclass
class MemoryConfig(Config):
    """Product-key memory layers to add to a decoder."""

    layers: tuple[int, ...] | None = setting(None, "decoder layer indices (0-based) whose FFN gets a memory; none = 3 layers "
                                                   "at 27, 47 and 67 % of the depth (8, 14, 20 of 30) (studies/offline)")
    slots: int = setting(65536, "value rows per memory layer, N; a perfect square (two sub-key tables of sqrt(N) rows) "
                                "(studies/offline)")
    heads: int = setting(4, "query heads; each reads top-k rows and their reads are summed (studies/offline)")
    topk: int = setting(16, "rows read per head and token (k); at most sqrt(N) (studies/offline)")
    key_dim: int = setting(256, "query/key size per head; each of the two sub-keys has key_dim / 2 (studies/offline)")
    value_dim: int | None = setting(None, "width of a value row; none = the model's hidden size")
    mode: Literal["additive", "replacement"] = setting(
        "additive", "additive: h = FFN(x) + mem(x), unchanged at the start; replacement: mem replaces the FFN (heal it)")
    value_init: Literal["zeros", "normal"] | None = setting(None, "zeros or normal; none = zeros for additive, normal for replacement")
    value_init_std: float = setting(0.02, "standard deviation of normal value init")
    seed: int = setting(0, "seed of the initial keys and projections, so a retrofit is repeatable")
    seed_per_run: bool = setting(False, "a study retrofits a memory for each run seed, drawn with that seed (the published "
                                        "study); false: one memory, drawn with `seed`, for every run")
    variant: Literal["smf", "published"] = setting(
        "smf", "smf: this project's layer (input re-normalised, no biases, zero values: an exact no-op at the start); "
               "published: the SMF-on-Qwen study's layer (query, gate and output projections with biases, the raw FFN "
               "input, keys U(±1/√key_dim), values N(0, 1/√value_dim), its projection init; value_init and "
               "value_init_std do not apply; with scale 0.01 for the study's additive arm)")
    scale: float | None = setting(None, "a learnable output scale alpha (mem(x) becomes alpha * mem(x)) initialised at this value, "
                                        "as the published study's additive arm (0.01 with normal values); none = no scale")
    checked: InitVar[bool] = True

    def __post_init__(self, checked: bool) -> None:
        if self.layers is not None:
            self.layers = tuple(int(i) for i in self.layers)
        if self.value_init is None:
            self.value_init = "zeros" if self.mode == "additive" and self.variant != "published" else "normal"
        if checked:
            self.check()

    def at_depth(self, num_layers: int) -> "MemoryConfig":
        """This config with its layers resolved for a decoder of `num_layers` layers (`depth_layers` when none)."""
        return self if self.layers is not None else replace(self, layers=depth_layers(num_layers))

    @property
    def n_layers(self) -> int:
        """How many memory layers this config adds (resolved or not)."""
        return len(self.layers) if self.layers is not None else len(DEPTH_FRACTIONS)

    @property
    def sub_keys(self) -> int:
        """Rows of each sub-key table: sqrt(slots)."""
        return math.isqrt(self.slots)

    def check(self, where: str = "memory", num_layers: int | None = None) -> None:
        """Check the config; with `num_layers`, also that the layer indices exist."""
        if self.layers is not None and not self.layers:
            raise SmfError(f"{where}: give at least one memory layer index, e.g. --layers 6,12,18")
        if self.layers is not None and len(set(self.layers)) != len(self.layers):
            raise SmfError(f"{where}: memory layers {list(self.layers)} repeat an index; give each layer once")
        if self.slots < 4 or math.isqrt(self.slots) ** 2 != self.slots:
            near = max(2, round(math.sqrt(max(self.slots, 4)))) ** 2
            raise SmfError(f"{where}: memory slots must be a perfect square (product keys use sqrt(N) sub-keys); {self.slots} is not, try {near}")
        check_choices(self, where)
        if self.heads < 1:
            raise SmfError(f"{where}: memory heads must be >= 1, got {self.heads}")
        if not 1 <= self.topk <= self.sub_keys:
            raise SmfError(f"{where}: memory top-k must be between 1 and sqrt(slots) = {self.sub_keys}, got {self.topk}")
        if self.key_dim < 2 or self.key_dim % 2:
            raise SmfError(f"{where}: memory key dim must be even (two half-keys), got {self.key_dim}")
        if self.value_dim is not None and self.value_dim < 1:
            raise SmfError(f"{where}: memory value dim must be >= 1, got {self.value_dim}")
        if not self.value_init_std >= 0:
            raise SmfError(f"{where}: memory value init std must be >= 0, got {self.value_init_std}")
        if self.variant == "published" and self.value_init != "normal":
            raise SmfError(f"{where}: the published memory layer draws its values N(0, 1/√value_dim); remove value_init "
                           f"'{self.value_init}' or use variant smf")
        if self.scale is not None and not math.isfinite(self.scale):
            raise SmfError(f"{where}: memory scale must be a finite number or null, got {self.scale}")
        if num_layers is not None and self.layers is not None:
            bad = [i for i in self.layers if not 0 <= i < num_layers]
            if bad:
                raise SmfError(f"{where}: memory layer index {bad[0]} does not exist: the model has {num_layers} layers (0..{num_layers - 1})")
