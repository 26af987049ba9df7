"""Access statistics and the row-selection rules of sparse memory finetuning.

Background statistics come from running B batches of general text through the
retrofitted model once; for every memory layer and row i they keep the document
frequency df(i) (batches that read row i) and the total access count. During
training, with c(i) the accesses of row i by the real tokens of the step's batch:

    tf     c(i) / Σc
    tfidf  c(i) / Σc · log((B + 1) / (df(i) + 1))            (Lin et al. 2025)
    kl     p(i) · log(p(i) / q(i)),  p = c / Σc,  q = (bg(i) + 1) / Σ(bg + 1)
           (row i's term of KL(batch ‖ background): rows read far more than usual)
    all    every row read (control)
    random t rows drawn uniformly among those read (control)

and the top-t rows per layer are trained. Only rows the batch read compete; smf's TF-IDF never
chooses a row scoring 0 (read in every background batch). `published` scores as the published
SMF-on-Qwen study does: B is at least 1 (no background: idf log 2), KL is p · log((p + 1e-8) /
(q + 1e-8)), and every row read is eligible whatever its score: k = min(t, rows read).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from smf.config import Config, at, choice, setting
from smf.data.sources import check_source
from smf.errors import SmfError
from smf.io import reading
from smf.models import PRECISIONS
from smf.names import BACKGROUND_FILE


@dataclass
class BackgroundConfig(Config):
    """Which general text the background statistics count, and how much of it."""

    data: Any = setting("docstrings", "general text: docstrings, pydoc, wikitext, or a .txt/.jsonl file (options: "
                                      "wikitext:split=train) (studies/offline: the docstrings, a source apart from "
                                      "every probe)")
    batches: int = setting(512, "number of batches B (the df of a row counts the batches that read it) (studies/offline)")
    batch_size: int = setting(1, "sequences per batch; 1 counts df per sequence (studies/probes: per sequence learns "
                                 "about 1.7 times as much as per batch of 8 in the same steps)")
    max_length: int = setting(128, "tokens per sequence (studies/offline)")
    pack: bool = setting(True, "join the documents with EOS and cut them into max_length sequences (general text); "
                               "false: each document is one sequence from its first token, cut at max_length (chats: "
                               "a chat starts a sequence when the model is used, and the rows its first tokens read "
                               "are those of no packed sequence)")
    mixed_precision: str = setting("auto", "auto (bf16 autocast on a GPU, as training reads there), no, or bf16")

    def check(self, where: str) -> None:
        for name in ("batches", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise SmfError(f"{where}: {name} must be >= 1, got {getattr(self, name)}")
        choice(self.mixed_precision, PRECISIONS, "mixed precision", at(where, "mixed_precision"))
        check_source(self.data, "text", at(where, "data"))


@dataclass(frozen=True)
class Rule:
    """A row-selection rule. `score(selector, layer, rows, p)` ranks the rows read
    (p = their share of the step's accesses); a rule without `score` picks rows itself
    (`all`, `random`). `color` is its line in the study's plots."""

    name: str
    about: str
    score: Callable[["RowSelector", int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    needs_background: bool = False
    color: str = "k"


# The rules, in the order the CLI and the report list them; add a rule here.
RULES: dict[str, Rule] = {r.name: r for r in [
    Rule("tfidf", "c(i)/Σc · log((B+1)/(df(i)+1)) against the background (Lin et al.)",
         lambda s, layer, rows, p: p * s.idf(layer, rows.device)[rows], needs_background=True, color="#1f77b4"),
    Rule("kl", "p(i)·log(p(i)/q(i)): row i's term of KL(batch ‖ background)",
         lambda s, layer, rows, p: s.kl_terms(layer, rows, p), needs_background=True, color="#2ca02c"),
    Rule("tf", "c(i)/Σc: the rows the batch reads most", lambda s, layer, rows, p: p, color="#17becf"),
    Rule("all", "every row read (control)", color="#9467bd"),
    Rule("random", "t rows drawn uniformly among those read (control)", color="#8c564b"),
]}


@dataclass
class BackgroundStats:
    """Per memory layer: df (N,) and counts (N,) int64, over `batches` batches."""

    batches: int
    df: dict[int, torch.Tensor]
    counts: dict[int, torch.Tensor]

    @classmethod
    def empty(cls, slots: dict[int, int]) -> "BackgroundStats":
        """slots: {layer: N}."""
        zeros = lambda n: torch.zeros(n, dtype=torch.int64)  # noqa: E731
        return cls(0, {i: zeros(n) for i, n in slots.items()}, {i: zeros(n) for i, n in slots.items()})

    def add_batch(self, accesses: dict[int, torch.Tensor]) -> None:
        """accesses: {layer: rows read by the batch's real tokens, any shape}."""
        self.add_counts({layer: torch.bincount(rows.flatten().cpu(), minlength=len(self.df[layer])) for layer, rows in accesses.items()})

    def add_counts(self, counts: dict[int, torch.Tensor]) -> None:
        """counts: {layer: (N,) how often the batch's real tokens read each row}."""
        for layer, dense in counts.items():
            dense = dense.cpu()
            self.df[layer] += (dense > 0).long()
            self.counts[layer] += dense
        self.batches += 1

    def add(self, other: "BackgroundStats") -> "BackgroundStats":
        """These statistics with `other`'s documents added (the same layers and rows); self, changed."""
        for layer in self.df:
            self.df[layer] += other.df[layer]
            self.counts[layer] += other.counts[layer]
        self.batches += other.batches
        return self

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / BACKGROUND_FILE
        tensors = {f"df.{i}": t for i, t in self.df.items()} | {f"counts.{i}": t for i, t in self.counts.items()}
        tmp = path.with_name(f".{path.name}.tmp")  # atomic: write aside, then rename
        save_file(tensors, str(tmp), metadata={"batches": str(self.batches)})
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "BackgroundStats":
        path = Path(folder) / BACKGROUND_FILE
        if not path.is_file():
            raise SmfError(f"no background statistics in {folder} ({BACKGROUND_FILE}); run: smf background --model {folder}")
        df, counts = {}, {}
        with reading(path, f"count them again: smf background --model {folder}"), safe_open(str(path), "pt") as f:
            batches = int(f.metadata()["batches"])
            for key in f.keys():
                kind, layer = key.split(".")
                (df if kind == "df" else counts)[int(layer)] = f.get_tensor(key)
        return cls(batches, df, counts)


def _cached(cache: dict, layer: int, device: torch.device | str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """A layer's tensor from `cache` on `device`: made once on the CPU, copied once to each other device."""
    if (layer, "cpu") not in cache:
        cache[layer, "cpu"] = make()
    if (layer, str(device)) not in cache:
        cache[layer, str(device)] = cache[layer, "cpu"].to(device)
    return cache[layer, str(device)]


class RowSelector:
    """Chooses the top-t memory rows per layer from a step's access counts."""

    KL_EPS = 1e-8  # the published study adds it to both shares

    def __init__(self, rule: str, top_t: int, background: BackgroundStats | None = None, seed: int = 0, published: bool = False):
        if rule not in RULES:
            raise SmfError(f"unknown selection rule '{rule}'; choose one of {', '.join(RULES)}")
        if top_t <= 0:
            raise SmfError(f"top-t must be a positive number of rows, got {top_t}")
        if RULES[rule].needs_background and background is None:
            raise SmfError(f"selection rule '{rule}' needs background statistics; run smf background on the model first")
        self.rule, self.top_t, self.background, self.published = rule, top_t, background, published
        self.generator = torch.Generator().manual_seed(seed)
        self._idf: dict[tuple[int, str], torch.Tensor] = {}
        self._log_q: dict[tuple[int, str], torch.Tensor] = {}

    def scores(self, layer: int, rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """rows (u,) distinct rows read, counts (u,) their accesses → scores (u,) float64."""
        c = counts.double()
        score = RULES[self.rule].score
        assert score is not None, f"rule {self.rule} has no scores"
        return score(self, layer, rows, c / c.sum())

    def idf(self, layer: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(N,) log((B + 1) / (df + 1)), on `device`."""
        def make() -> torch.Tensor:
            batches = max(self.background.batches, 1) if self.published else self.background.batches
            return math.log(batches + 1) - torch.log(self.background.df[layer].double() + 1)

        return _cached(self._idf, layer, device, make)

    def kl_terms(self, layer: int, rows: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Each row's term of KL(batch ‖ background): p · log(p / q); published: p · log((p + ε) / (q + ε))."""
        if self.published:
            eps = self.KL_EPS
            return p * ((p + eps).log() - (self.log_q(layer, rows.device)[rows].exp() + eps).log())
        return p * (p.log() - self.log_q(layer, rows.device)[rows])

    def log_q(self, layer: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(N,) log of the add-one smoothed background access distribution, on `device`."""
        def make() -> torch.Tensor:
            smoothed = self.background.counts[layer].double() + 1
            return smoothed.log() - smoothed.sum().log()

        return _cached(self._log_q, layer, device, make)

    def select(self, layer: int, rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """rows (u,) distinct rows read, counts (u,) → the rows to train, sorted (≤ t,)."""
        if self.rule == "all":
            chosen = rows
        elif self.rule == "random":
            chosen = rows[torch.randperm(len(rows), generator=self.generator)[: self.top_t]]
        else:
            scores = self.scores(layer, rows.cpu(), counts.cpu())
            # Equal scores at the t-th place go to the lower row index (`rows` ascend), not to
            # topk's build-dependent order: every score above the t-th, then the lowest tied rows.
            # O(u), where a stable sort of all u scores costs 13x topk's time at u = 50,000.
            k = min(self.top_t, len(rows))
            if self.rule == "tfidf" and not self.published:
                # A row read in every background document (idf 0: common, or marked so by `smf learn`'s
                # --protect and --anchor-reads exclude) scores 0 however often the batch reads it: it is
                # never chosen, even when fewer than t rows score above 0 (TF-IDF scores are >= 0).
                k = min(k, int((scores > 0).sum()))
            if k == 0:
                return rows[:0]
            threshold = scores.topk(k).values[-1]
            above = (scores > threshold).nonzero().flatten()
            tied = (scores == threshold).nonzero().flatten()[: k - len(above)]
            chosen = rows[torch.cat([above, tied]).to(rows.device)]
        return chosen.sort().values

    @property
    def fixed_size(self) -> bool:
        """Whether `select_fixed` can choose for this rule: a scored rule ranks every row in fixed shapes."""
        return RULES[self.rule].score is not None

    def select_fixed(self, layer: int, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """counts (N,) on the device → rows (k,) ascending and valid (k,) bool, k = min(t, N): the rows
        `select(layer, *rows read)` chooses are the valid ones; the others are rows not chosen, there to keep
        the shape fixed. Every operation has a fixed output shape, so the host never waits for the device."""
        assert self.fixed_size, f"rule {self.rule} picks rows itself"
        n, device = counts.shape[0], counts.device
        k = min(self.top_t, n)
        c = counts.double()
        score = RULES[self.rule].score(self, layer, torch.arange(n, device=device), c / c.sum())
        eligible = counts > 0
        if self.rule == "tfidf" and not self.published:
            eligible &= score > 0  # as select: a row scoring 0 is never chosen
        score = torch.where(eligible, score, -math.inf)
        threshold = score.topk(k).values[-1]  # -inf when fewer than k rows are eligible
        above = score > threshold
        tied = eligible & (score == threshold)
        chosen = above | (tied & (tied.cumsum(0) <= k - above.sum()))  # ties to the lower rows, as select
        picked = chosen.sum()
        place = torch.arange(k, device=device)
        rows = torch.where(place < picked, torch.nonzero_static(chosen, size=k).flatten(),
                           torch.nonzero_static(~chosen, size=k).flatten()[(place - picked).clamp(min=0)])
        rows, order = rows.sort()
        return rows, (place < picked)[order]
