"""`smf inspect`: where SMF put what it learned, read from its saved deltas.

An SMF run's model folder is a delta over the memory model: the value rows it changed.
A stream's chunks each leave one (cumulative) delta, so consecutive deltas tell which
rows each chunk wrote. From them this module reports

- per stage (a run, or each chunk of a stream): the rows it changed per layer, whether
  they all lie among the rows its optimizer selected (`selected.safetensors`), and
  the Jaccard index between the stages' row sets;
- per layer: how many rows the background reads, and how often the changed rows are
  read by the background compared with all rows (a histogram);
- for a question and its answer: the rows the answer tokens read in the final model,
  and which stage last wrote each;
- for a stream with results: whether the overlap of chunk i with an earlier chunk j
  goes with the accuracy chunk j lost while chunk i was learned.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from smf.errors import SmfError
from smf.io import read_json, reading, write_json_atomic
from smf.memory.delta import is_delta, root_folder
from smf.memory.retrofit import memory_layers, set_recording
from smf.models import load_model
from smf.names import BACKGROUND_FILE, DELTA_WEIGHTS, MEMORY_FILE, MODEL_DIR, RESULT_FILE, SELECTED_FILE, WEIGHTS_FILE
from smf.selection import BackgroundStats

VALUES = re.compile(r"layers\.(\d+)\..*memory\.values$")


@dataclass
class Stage:
    name: str
    delta: Path | None  # None: the memory model itself (nothing changed)
    result: Path | None  # a stream chunk's result.json


def find_stages(path: Path) -> list[Stage]:
    """The deltas under `path`, in order: a delta folder, a run folder (model/), or a stream
    run folder (chunk1/model, chunk2/model, ...). A memory model without changes is one
    stage with none. Anything else is refused."""
    path = Path(path)
    if not path.is_dir():
        raise SmfError(f"{path} is not a folder; give an SMF run's model folder, run folder or stream run folder")
    if is_delta(path):
        return [Stage(path.name, path, None)]
    if is_delta(path / MODEL_DIR):
        return [Stage(path.name, path / MODEL_DIR, None)]
    chunks = sorted((p for p in path.glob("chunk*") if p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))
    stages = [Stage(p.name, p / MODEL_DIR, p / RESULT_FILE if (p / RESULT_FILE).is_file() else None)
              for p in chunks if is_delta(p / MODEL_DIR)]
    if stages:
        return stages
    if (path / MEMORY_FILE).is_file():
        return [Stage("memory model", None, None)]
    raise SmfError(f"{path} holds no memory: give an SMF run's model folder (a delta from smf train/compare/learn), "
                   "a stream run folder (runs/<smf method>/seed0), or a retrofitted model")


def _table(delta: Path, base_file: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, values) a delta stores for the value table `name`: sorted rows and their values."""
    with reading(delta / DELTA_WEIGHTS, "the run folder is damaged"), safe_open(str(delta / DELTA_WEIGHTS), "pt") as f:
        keys = set(f.keys())
        if name + "::rows" in keys:
            rows, values = f.get_tensor(name + "::rows"), f.get_tensor(name + "::values")
            order = rows.argsort()
            return rows[order], values[order]
        if name not in keys:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0)
        whole = f.get_tensor(name)
    with safe_open(str(base_file), "pt") as b:
        rows = (whole != b.get_tensor(name)).any(dim=1).nonzero().flatten()
    return rows, whole[rows]


def stage_rows(stages: list[Stage], root: Path) -> tuple[dict[int, str], list[dict[int, torch.Tensor]]]:
    """Per stage, per memory layer, the rows that stage wrote (changed against the stage before)."""
    base_file = root / WEIGHTS_FILE
    with safe_open(str(base_file), "pt") as f:
        names = dict(sorted((int(m.group(1)), key) for key in f.keys() if (m := VALUES.search(key))))
    if not names:
        raise SmfError(f"{root} has no memory value tables; smf inspect reads retrofitted models")
    out: list[dict[int, torch.Tensor]] = []
    previous = {layer: (torch.zeros(0, dtype=torch.long), None) for layer in names}
    for stage in stages:
        wrote = {}
        for layer, name in names.items():
            if stage.delta is None:
                wrote[layer] = torch.zeros(0, dtype=torch.long)
                continue
            rows, values = _table(stage.delta, base_file, name)
            prev_rows, prev_values = previous[layer]
            changed = torch.ones(len(rows), dtype=torch.bool)
            if len(prev_rows):
                at = torch.searchsorted(prev_rows, rows).clamp(max=len(prev_rows) - 1)
                seen = prev_rows[at] == rows
                same = torch.zeros_like(changed)
                same[seen] = (prev_values[at[seen]] == values[seen]).all(dim=1)
                changed = ~same
            wrote[layer] = rows[changed]
            previous[layer] = (rows, values)
        out.append(wrote)
    return names, out


def selected_rows(stage: Stage) -> dict[int, torch.Tensor] | None:
    if stage.delta is None or not (stage.delta / SELECTED_FILE).is_file():
        return None
    with reading(stage.delta / SELECTED_FILE, "the run folder is damaged"), safe_open(str(stage.delta / SELECTED_FILE), "pt") as f:
        return {int(key.split(".")[1]): f.get_tensor(key) for key in f.keys()}


def _ids(rows: dict[int, torch.Tensor]) -> set[tuple[int, int]]:
    return {(layer, int(r)) for layer, t in rows.items() for r in t.tolist()}


def jaccard(a: set, b: set) -> float | None:
    return len(a & b) / len(a | b) if a | b else None


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3 or statistics.pstdev(xs) == 0 or statistics.pstdev(ys) == 0:
        return None
    return statistics.correlation(xs, ys)


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for m in range(i, j + 1):
            ranks[order[m]] = (i + j) / 2
        i = j + 1
    return ranks


def overlap_and_forgetting(stages: list[Stage], sets: list[set], task_of: list[str]) -> dict | None:
    """For each chunk i and earlier chunk j: the share of chunk j's rows that chunk i wrote,
    beside the points of accuracy chunk j lost while chunk i was learned."""
    results = [read_json(s.result) if s.result else None for s in stages]
    if len(stages) < 2 or any(r is None for r in results):
        return None
    acc = [[r["tasks"][label]["headline"]["value"] for label in task_of] for r in results]
    pairs = []
    for i in range(1, len(stages)):
        for j in range(i):
            share = len(sets[j] & sets[i]) / len(sets[j]) if sets[j] else 0.0
            pairs.append({"learned": i + 1, "earlier": j + 1, "overwritten": share, "jaccard": jaccard(sets[i], sets[j]),
                          "accuracy_drop": 100 * (acc[i - 1][j] - acc[i][j])})
    xs, ys = [p["overwritten"] for p in pairs], [p["accuracy_drop"] for p in pairs]
    return {"pairs": pairs, "pearson": _pearson(xs, ys), "spearman": _pearson(_ranks(xs), _ranks(ys)), "n": len(pairs)}


@torch.no_grad()
def answer_rows(model_path: Path, question: str, answer: str) -> dict[int, list[int]]:
    """The rows the answer's tokens are predicted from (the reads at the positions before each)."""
    model, tokenizer = load_model(model_path)
    prompt = tokenizer(question).input_ids
    target = tokenizer(" " + answer.strip(), add_special_tokens=False).input_ids
    ids = torch.tensor([prompt + target])
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[0, len(prompt) - 1 : len(prompt) + len(target) - 1] = True
    memories = memory_layers(model)
    set_recording(model, True)
    for memory in memories.values():
        memory.record_mask = mask
    model(input_ids=ids)
    return {layer: sorted(set(m.last_rows.flatten().tolist())) for layer, m in memories.items()}


def inspect(path: Path, out: Path, *, question: str | None = None, answer: str | None = None) -> dict:
    stages = find_stages(path)
    last = stages[-1].delta
    root = root_folder(last) if last is not None else Path(path)
    names, wrote = stage_rows(stages, root)
    sets = [_ids(w) for w in wrote]
    report: dict = {"path": str(path), "memory_model": str(root), "layers": sorted(names), "stages": []}
    for stage, rows in zip(stages, wrote):
        entry = {"name": stage.name, "rows_changed": {str(layer): len(t) for layer, t in rows.items()},
                 "rows_changed_total": sum(len(t) for t in rows.values())}
        chosen = selected_rows(stage)
        if chosen is not None:
            outside = _ids(rows) - _ids(chosen)
            entry["rows_selected_total"] = sum(len(t) for t in chosen.values())
            entry["changed_outside_selected"] = len(outside)
        report["stages"].append(entry)
    report["jaccard"] = [[jaccard(a, b) for b in sets] for a in sets]
    union = {layer: sorted({r for w in wrote for r in w[layer].tolist()}) for layer in names}
    background = BackgroundStats.load(root) if (root / BACKGROUND_FILE).is_file() else None
    report["row_use"] = {}
    for layer in sorted(names):
        use = {"rows_changed": len(union[layer])}
        if background is not None:
            counts = background.counts[layer]
            use.update({"slots": len(counts), "rows_read_by_background": int((counts > 0).sum()),
                        "background_reads_all_rows_mean": float(counts.double().mean()),
                        "background_reads_changed_rows_mean": float(counts[union[layer]].double().mean()) if union[layer] else None,
                        "changed_rows_never_read_by_background": int((counts[union[layer]] == 0).sum()) if union[layer] else 0})
        report["row_use"][str(layer)] = use
    first = read_json(stages[0].result) if stages[0].result else None
    labels = [f"chunk{k}" for k in range(1, len(stages) + 1)]
    if first is not None and all(label in first["tasks"] for label in labels):
        report["overlap_vs_forgetting"] = overlap_and_forgetting(stages, sets, labels)
    if question is not None:
        if last is None:
            raise SmfError("--question needs a trained SMF run (its answer's rows are compared with what the run wrote)")
        reads = answer_rows(last, question, answer or "")
        writer = {}
        for k, w in enumerate(wrote):
            for layer, rows in w.items():
                for r in rows.tolist():
                    writer[(layer, r)] = stages[k].name
        report["question"] = {"question": question, "answer": answer, "layers": {
            str(layer): {"rows_read": len(rows), "rows_written": sum((layer, r) in writer for r in rows),
                         "last_written_by": {str(r): writer[(layer, r)] for r in rows if (layer, r) in writer}}
            for layer, rows in reads.items()}}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "inspect.json", report)
    _plots(report, wrote, background, out)
    return report


def _plots(report: dict, wrote: list[dict[int, torch.Tensor]], background, out: Path) -> None:
    import matplotlib  # why: slow to import (about half a second); only the figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s["name"] for s in report["stages"]]
    layers = report["layers"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    bottom = [0] * len(names)
    for layer in layers:
        heights = [s["rows_changed"][str(layer)] for s in report["stages"]]
        ax.bar(names, heights, bottom=bottom, label=f"layer {layer}")
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set(title="value rows written", ylabel="rows")
    ax.legend(fontsize=8)
    matrix = [[v if v is not None else math.nan for v in row] for row in report["jaccard"]]
    top = max(0.05, max((v for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j and v == v), default=0.05))
    image = axes[1].imshow(matrix, vmin=0, vmax=top, cmap="magma")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if i != j and v == v:
                axes[1].text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="k" if v > 0.6 * top else "w")
    axes[1].set_xticks(range(len(names)), names, rotation=45, fontsize=8)
    axes[1].set_yticks(range(len(names)), names, fontsize=8)
    axes[1].set_title("overlap of the rows written (Jaccard)")
    fig.colorbar(image, ax=axes[1], shrink=0.8)
    ax = axes[2]
    pairs = (report.get("overlap_vs_forgetting") or {}).get("pairs")
    if pairs:
        ax.scatter([100 * p["overwritten"] for p in pairs], [p["accuracy_drop"] for p in pairs])
        for p in pairs:
            ax.annotate(f"{p['learned']}→{p['earlier']}", (100 * p["overwritten"], p["accuracy_drop"]), fontsize=7)
        r = report["overlap_vs_forgetting"]["spearman"]
        ax.set(title=f"overlap vs forgetting (Spearman {r:.2f})" if r is not None else "overlap vs forgetting",
               xlabel="% of chunk j's rows that chunk i wrote", ylabel="points chunk j lost while chunk i was learned")
    elif background is not None:
        _access_hist(ax, layers, wrote, background)
    fig.tight_layout()
    fig.savefig(out / "inspect.png", dpi=120)
    plt.close(fig)
    if background is not None:
        fig, ax = plt.subplots(figsize=(6, 4))
        _access_hist(ax, layers, wrote, background)
        fig.tight_layout()
        fig.savefig(out / "access.png", dpi=120)
        plt.close(fig)


def _access_hist(ax, layers: list[int], wrote: list[dict[int, torch.Tensor]], background) -> None:
    """Per layer: the share of rows the background reads n times, all rows (solid) against the rows written (dashed)."""
    top = max(float(background.counts[layer].max()) for layer in layers)
    bins = [0.5, 1.5] + torch.logspace(math.log10(2), math.log10(top + 2), 20).tolist()
    for k, layer in enumerate(layers):
        color = f"C{k}"
        counts = background.counts[layer].double() + 1
        changed = torch.cat([w[layer] for w in wrote]).unique()
        ax.hist(counts.tolist(), bins=bins, histtype="step", color=color, weights=[1 / len(counts)] * len(counts),
                label=f"layer {layer}: all rows")
        if len(changed):
            ax.hist(counts[changed].tolist(), bins=bins, histtype="step", color=color, ls="--",
                    weights=[1 / len(changed)] * len(changed), label=f"layer {layer}: rows written")
    ax.set(xscale="log", yscale="log", title="how often the background reads a row",
           xlabel="background reads + 1 (1 = never read)", ylabel="share of rows")
    ax.legend(fontsize=7)
