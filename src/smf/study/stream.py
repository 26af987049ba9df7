"""A continual stream: every method setting learns K chunks of facts, one after another.

The setting the SMF papers were written for: a model keeps learning new facts, and must
keep what it knew and what it learned earlier in the stream. A study with a `stream:`
section runs here instead of once per setting (see `StreamConfig`):

    base/result.json                  the base model on every chunk's questions and the probes
    memory_model/                     the retrofitted model and its background statistics
    runs/<label>/seed<s>/chunk<k>/    chunk k's training run, started from chunk k-1's model:
        train_config.json, log.jsonl, summary.json, result.json (every chunk and probe after it),
        model/  (SMF: the delta over the memory model with the rows chunk k selected; LoRA: the
                 adapter; full: the whole model, kept for the last finished chunk only),
        background.safetensors (SMF with background: accumulate: the statistics after chunk k)
    results.json, report.md, retention.png, stream.png

Each chunk starts from the previous chunk's saved model (read back from disk), so a
stopped stream resumes at its first unfinished chunk and ends as an uninterrupted one.
`R[i][j]` is the accuracy on chunk j after learning chunk i; from it come the average
final accuracy, backward transfer (mean of R[K][j] - R[j][j] over earlier chunks), and
each chunk's retained share of its initial gain (R[K][j] - base_j) / (R[j][j] - base_j).
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import torch

from smf.data.batching import collate, encode_examples
from smf.data.sources import training_examples
from smf.errors import SmfError
from smf.evaluate.tasks import resolve_task
from smf.io import read_json, write_json_atomic, write_text_atomic
from smf.methods import make_method
from smf.models import load_model
from smf.names import CHECKPOINT, CONFIG_FILE, MODEL_DIR, REPORT_FILE, RESULT_FILE, STREAM_FILE, SUMMARY_FILE
from smf.selection import BackgroundStats
from smf.stats import change_cell, change_stderr, mean_std, noise, within_noise
from smf.study.config import RunSpec, StudyConfig
from smf.study.report import compared_as, family_color
from smf.study.results import choose_on_validation, delta, machine
from smf.train import train
from smf.train.stages import collect_background


# results.json's mark that a probe's delta_stderr is the items' share, weighed beside the seed spread by stats.noise
NOISE = "stats.noise"


def chunk_folder(run_folder: Path, k: int) -> Path:
    return run_folder / f"chunk{k}"


def run_stream(config: StudyConfig, out: Path, base: dict, base_dir, memory_dir, tasks: dict, evaluate, progress: bool) -> dict:
    """Learn every chunk with every method setting and seed (resuming); return the results.

    base: the base model's result; evaluate(model, tokenizer, tasks) → the tasks' results."""
    chunks = config.stream_chunks()
    for seed in config.seeds:
        for run in config.runs():
            _run_one(config, run, seed, chunks, base_dir, memory_dir, tasks, evaluate, out, progress)
    return collect_stream(config, out, base)


def _run_one(config: StudyConfig, run: RunSpec, seed: int, chunks: list[dict], base_dir, memory_dir, tasks: dict,
             evaluate, out: Path, progress: bool) -> None:
    folder = run.folder(out, seed)
    train_config = run.train_config(config, seed)
    method = make_method(train_config)  # an instance: a method that wraps another answers as that one
    validation = {resolve_task(s).label for s in config.validation.specs()}
    probes = {resolve_task(s).label for s in config.evaluation.specs()[1:]}
    for k, chunk in enumerate(chunks, 1):
        here = chunk_folder(folder, k)
        if (here / RESULT_FILE).is_file():
            continue
        model, tokenizer, model_dir, background = _state_before(config, method, method.uses_memory(train_config), folder, k,
                                                                  base_dir, memory_dir)
        resume = (here / CONFIG_FILE).is_file()
        if resume and ((here / SUMMARY_FILE).is_file() or not (here / CHECKPOINT).is_dir()):
            shutil.rmtree(here)  # trained but not evaluated, or nothing to resume from: train again
            resume = False
        if progress:
            print(f"== {run.label}, seed {seed}, {chunk['label']} (facts {chunk['facts']})")
        start = time.perf_counter()
        result = train(model, tokenizer, training_examples(chunk["data"]), train_config, here, model_dir=model_dir,
                       resume=resume, background=background, progress=progress)
        train_wall = time.perf_counter() - start
        if background is not None:  # this chunk's reads join the background the next chunk ranks against
            _accumulate(result.model, tokenizer, chunk, train_config, background).save(here)
        # validation tasks (which choose settings) only at the end of the stream; probes as configured
        later = validation if config.stream.probes_after == "every" else validation | probes
        now = tasks if k == len(chunks) else {label: t for label, t in tasks.items() if label not in later}
        evaluated = evaluate(result.model, tokenizer, now)
        record = {"label": run.label, "family": run.family.label, "seed": seed, "chunk": k, "facts": chunk["facts"],
                  "settings": run.settings, "train_config": train_config.to_dict(), "summary": result.summary,
                  "wall_seconds": train_wall, "eval_seconds": time.perf_counter() - start - train_wall, "tasks": evaluated}
        write_json_atomic(here / RESULT_FILE, record)
        shutil.rmtree(here / CHECKPOINT, ignore_errors=True)
        if not method.saves_compactly and k > 1:  # a whole model per chunk is too much to keep: only the latest
            shutil.rmtree(chunk_folder(folder, k - 1) / MODEL_DIR, ignore_errors=True)
        del model, result
        torch.cuda.empty_cache() if torch.cuda.is_available() else None


def _state_before(config: StudyConfig, method, memory: bool, folder: Path, k: int, base_dir, memory_dir):
    """(model, tokenizer, model_dir, background) to learn chunk k from: chunk k-1's saved model, as the
    method reads it back (`Method.continue_from`)."""
    start = memory_dir if memory else base_dir
    background = None
    if memory and config.stream.background == "accumulate":
        background = BackgroundStats.load(chunk_folder(folder, k - 1) if k > 1 else memory_dir)
    if k == 1:
        return (*load_model(start), start, background)
    last = chunk_folder(folder, k - 1) / MODEL_DIR
    if not last.is_dir():
        raise SmfError(f"{last} is gone, and chunk {k} starts from it; remove {chunk_folder(folder, k - 1)} "
                       f"(and later chunks) to learn chunk {k - 1} again")
    saved = [chunk_folder(folder, j) / MODEL_DIR for j in range(1, k)]
    return (*method.continue_from(saved, start, merge=config.stream.lora == "merge"), background)


def _accumulate(model, tokenizer, chunk: dict, train_config, background):
    """Add the rows a chunk's training sequences read (one background batch per training batch)."""
    data = encode_examples(training_examples(chunk["data"]), tokenizer, train_config.max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    size = train_config.batch_size
    return background.add(collect_background(model, [collate(data[i : i + size], pad) for i in range(0, len(data), size)],
                                             progress=False))


# ---------------------------------------------------------------- results


def first_half_forgotten(matrix: list[list[float]], base: list[float]) -> int | None:
    """The first chunk i (1-based) after which chunk 1 keeps less than half of its initial gain;
    None if it keeps at least half to the end (or gained nothing)."""
    gain = matrix[0][0] - base[0]
    if gain <= 0:
        return None
    return next((i + 1 for i in range(1, len(matrix)) if matrix[i][0] - base[0] < gain / 2), None)


def stream_metrics(matrix: list[list[float]], base: list[float]) -> dict:
    """The stream's numbers from R (K × K accuracies in [0, 1]) and the base accuracies per chunk.

    acc_final: mean of the last row (points); last_gain: R[K][K] - base_K (points);
    bwt: mean of R[K][j] - R[j][j] over j < K (points; negative = forgetting);
    retained[j]: (R[K][j] - base_j) / (R[j][j] - base_j) for j < K (None where the gain is not positive);
    mean_learned[i]: mean accuracy over chunks 1..i after chunk i (points).
    """
    k = len(matrix)
    last = matrix[-1]
    retained = []
    for j in range(k - 1):
        gain = matrix[j][j] - base[j]
        retained.append((last[j] - base[j]) / gain if gain > 0 else None)
    kept = [r for r in retained if r is not None]
    return {
        "acc_final": 100 * statistics.fmean(last),
        "last_gain": 100 * (last[-1] - base[-1]),
        "initial_gain": 100 * statistics.fmean(matrix[j][j] - base[j] for j in range(k)),
        "bwt": 100 * statistics.fmean(last[j] - matrix[j][j] for j in range(k - 1)),
        "retained": retained,
        "retained_min": min(kept) if kept else None,
        "retained_mean": statistics.fmean(kept) if kept else None,
        "mean_learned": [100 * statistics.fmean(matrix[i][: i + 1]) for i in range(k)],
        "half_forgotten_after": first_half_forgotten(matrix, base),
    }


def collect_stream(config: StudyConfig, out: Path, base: dict) -> dict:
    chunks = config.stream_chunks()
    labels = [c["label"] for c in chunks]
    probes = [resolve_task(p).label for p in config.evaluation.probes]
    extra = [resolve_task(t).label for t in config.evaluation.extra_tasks]
    base_tasks = base["tasks"]
    base_acc = [base_tasks[c]["headline"]["value"] for c in labels]
    runs = []
    last_tasks: dict[str, list[dict]] = {}  # a setting's evaluated tasks after the last chunk, one per seed
    for run in config.runs():
        for seed in config.seeds:
            folder = run.folder(out, seed)
            records = [chunk_folder(folder, k) / RESULT_FILE for k in range(1, len(chunks) + 1)]
            if not all(p.is_file() for p in records):
                continue
            records = [read_json(p) for p in records]
            last_tasks.setdefault(run.label, []).append(records[-1]["tasks"])
            matrix = [[r["tasks"][c]["headline"]["value"] for c in labels] for r in records]
            after = []  # probes and extra tasks after each chunk: value and change from base
            for r in records:
                row = {}
                for label in probes + extra:
                    if label not in r["tasks"]:  # probes_after: last
                        row[label] = None
                        continue
                    t, b = r["tasks"][label], base_tasks[label]
                    row[label] = {"value": t["headline"]["value"], "delta": delta(t["kind"], t["headline"]["value"], b["headline"]["value"]),
                                  "delta_stderr": change_stderr(t, b)}
                after.append(row)
            metrics = stream_metrics(matrix, base_acc)
            when = metrics["half_forgotten_after"]
            metrics["capacity_facts"] = sum(len(range(*map(int, c["facts"].split(":")))) for c in chunks[:when]) if when else None
            entry = {"label": run.label, "family": run.family.label, "seed": seed, "settings": run.settings,
                     "matrix": matrix, "after": after, **metrics,
                     "train_seconds": sum(r["summary"]["train_seconds"] for r in records),
                     "rows_trained": [r["summary"].get("rows_trained") for r in records]}
            write_json_atomic(folder / STREAM_FILE, entry)
            runs.append(entry)
    summary = []
    for run in config.runs():
        mine = [r for r in runs if r["label"] == run.label]
        if not mine:
            continue
        k = len(labels)
        row = {"label": run.label, "family": run.family.label, "seeds": [r["seed"] for r in mine],
               "matrix": [[statistics.fmean(r["matrix"][i][j] for r in mine) for j in range(k)] for i in range(k)],
               "mean_learned": [statistics.fmean(r["mean_learned"][i] for r in mine) for i in range(k)]}
        row["half_forgotten_after"] = [r["half_forgotten_after"] for r in mine]
        row["capacity_facts"] = [r["capacity_facts"] for r in mine]
        for key in ("acc_final", "last_gain", "initial_gain", "bwt", "retained_min", "retained_mean", "train_seconds"):
            row[key] = mean_std([r[key] for r in mine])
        row["drift"] = {label: {**change_cell([r["after"][-1][label]["delta"] for r in mine],
                                              [tasks[label] for tasks in last_tasks[run.label]], base_tasks[label]),
                                "path": [statistics.fmean(r["after"][i][label]["delta"] for r in mine)
                                         if mine[0]["after"][i][label] is not None else None for i in range(k)]}
                        for label in probes + extra}
        summary.append(row)
    val = config.validation
    chosen = {}
    if val.task is not None:  # the same rule as a study's, on the validation tasks after the last chunk
        names = [resolve_task(s).label for s in val.specs()]
        rows = []
        for run in config.runs():
            finals = [read_json(chunk_folder(run.folder(out, s), len(chunks)) / RESULT_FILE)
                      for s in config.seeds if (chunk_folder(run.folder(out, s), len(chunks)) / RESULT_FILE).is_file()]
            if not finals:
                continue
            row = {"label": run.label, "family": run.family.label}
            for label in names:
                values = [f["tasks"][label]["headline"]["value"] for f in finals]
                b = base_tasks[label]
                row[label] = {"value": mean_std(values), "delta": mean_std([delta(b["kind"], v, b["headline"]["value"]) for v in values])}
            rows.append(row)
        chosen = choose_on_validation(rows, names[0], names[1:], config.tolerance, val.min_gain)
    return {
        "study": config.name, "config": config.to_dict(), "stream": True, "noise": NOISE,
        "chunks": [{"label": c["label"], "facts": c["facts"]} for c in chunks],
        "probes": probes, "extra_tasks": extra, "tolerance": config.tolerance,
        "base": {label: {"metric": t["headline"]["metric"], "kind": t["kind"], "value": t["headline"]["value"],
                         "stderr": t["headline"]["stderr"], "n": t["n"]} for label, t in base_tasks.items()},
        "base_chunks": base_acc,
        "memory_slots": config.memory.slots * config.memory.n_layers if config.needs_memory() else None,
        "facts_total": sum(len(range(*map(int, c["facts"].split(":")))) for c in chunks),
        "validation": {"task": resolve_task(val.task).label if val.task is not None else None, "chosen": chosen},
        "summary": summary, "runs": runs, "machine": machine(),
    }


# ---------------------------------------------------------------- report and plots


def _pm(d: dict, digits: int = 1, scale: float = 1.0, signed: bool = False) -> str:
    if d["mean"] is None:
        return "–"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    text = fmt.format(d["mean"] * scale)
    return text + (f" ± {d['std'] * scale:.{digits}f}" if d["n"] > 1 else "")


def drift_cell(results: dict, drift: dict) -> dict:
    """A probe's change as `stats.noise` reads it. Streams collected before results.json carried
    NOISE stored the whole standard error, with the items' share divided by sqrt(seeds) (which
    understates it: every seed answers the same items); they are read as that error, as recorded."""
    if results.get("noise") == NOISE:
        return drift
    return {"delta": {**drift["delta"], "n": 1}, "delta_stderr": drift["delta_stderr"]}


def stream_markdown(results: dict, level: int = 1) -> str:
    """report.md of a stream; `level` is the title's heading level (as `report.report_text`'s)."""
    recorded = results.get("noise") != NOISE and any(len(r["seeds"]) > 1 for r in results["summary"])
    chunks = results["chunks"]
    probes = results["probes"] + results["extra_tasks"]
    base = results["base"]
    lines = [f"{'#' * level} {results['study']}: a stream of {len(chunks)} chunks", "",
             "Each method learns the chunks in order (" + ", ".join(f"{c['label']} = facts {c['facts']}" for c in chunks) + "); "
             + ("after each chunk it answers every chunk's held-out questions and the probes. "
                if results["config"]["stream"]["probes_after"] == "every" else
                "after each chunk it answers every chunk's held-out questions; after the last, the probes and extra tasks too. ")
             + "Accuracies in %, changes in points (perplexity: relative %). Seeds: "
             f"{', '.join(map(str, results['summary'][0]['seeds'])) if results['summary'] else '–'}; ± is the spread over "
             "seeds; in brackets a probe change's standard error: the seed spread over sqrt(seeds) beside the paired "
             "standard error of the seed-averaged change (over items for accuracies, a bootstrap over documents for "
             "perplexity), which more seeds do not shrink, since every seed answers the same items"
             + (" (these results were collected when the items' share was divided by sqrt(seeds) too: the brackets "
                "understate the error; run the stream again for the full one)" if recorded else "")
             + ". Backward transfer: the mean change of each earlier "
             "chunk from just after it was learned to the end; kept: (final − base) / (just after − base) per earlier chunk.", "",
             "| method | final acc., all chunks | initial gain | last chunk gain | backward transfer | "
             "kept of each gain (min / mean) | " + " | ".join(f"{p} change" for p in probes) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(probes)]
    base_mean = 100 * statistics.fmean(results["base_chunks"])
    lines.append(f"| **base** | {base_mean:.1f} | | | | | " + " | ".join(
        f"{base[p]['value']:.2f}" if base[p]["kind"] == "perplexity" else f"{100 * base[p]['value']:.1f}" for p in probes) + " |")
    for row in results["summary"]:
        cells = []
        for p in probes:
            d = row["drift"][p]
            text = _pm(d["delta"], signed=True)
            if d["delta_stderr"] is not None:
                text += f" (±{noise(drift_cell(results, d)):.1f})"
            cells.append(text)
        kept = " / ".join(_pm(row[key], 0, 100) + (" %" if row[key]["mean"] is not None else "") for key in ("retained_min", "retained_mean"))
        star = " ★" if row["label"] in results.get("validation", {}).get("chosen", {}).values() else ""
        lines.append(f"| {row['label']}{star} | {_pm(row['acc_final'])} | {_pm(row['initial_gain'], signed=True)} | "
                     f"{_pm(row['last_gain'], signed=True)} | {_pm(row['bwt'], signed=True)} | {kept} | " + " | ".join(cells) + " |")
    lines += ["", *stream_aims(results)]
    lines += ["", "Retention matrices (row i: after learning chunk i; column j: accuracy on chunk j, %; mean over seeds):", ""]
    head = "| after \\ on | " + " | ".join(c["label"] for c in chunks) + " |"
    for row in results["summary"]:
        lines += [f"**{row['label']}**", "", head, "|---|" + "---|" * len(chunks),
                  "| base | " + " | ".join(f"{100 * v:.0f}" for v in results["base_chunks"]) + " |"]
        for i, values in enumerate(row["matrix"]):
            lines.append(f"| {chunks[i]['label']} | " + " | ".join(f"{100 * v:.0f}" for v in values) + " |")
        lines.append("")
    return "\n".join(lines)


def stream_aims(results: dict) -> list[str]:
    """The stream's aims, checked on this run: SMF keeps >= 80 % of each chunk's gain; the
    baselines keep less at a like last-chunk gain; the probes stay within their noise."""
    rows = {r["label"]: r for r in results["summary"]}
    smf = [r for r in results["summary"] if compared_as(r["family"]) == "smf"]
    others = [r for r in results["summary"] if compared_as(r["family"]) == "baseline"]
    probes = results["probes"]
    lines = ["Aims, checked on this run (a probe's noise: the 95 % interval of its mean change, from the paired standard "
             "error of the seed-averaged change — over items for accuracies, a bootstrap over documents for perplexity — "
             "beside the spread over seeds, as the study report weighs it):", ""]
    for r in smf:
        kept = r["retained_min"]["mean"]
        ok = kept is not None and kept >= 0.8
        lines.append(f"- {r['label']} keeps at least 80 % of each chunk's gain: **{'yes' if ok else 'no'}** "
                     f"(least kept {'–' if kept is None else f'{100 * kept:.0f} %'}, last chunk gain {r['last_gain']['mean']:+.1f} points)")
    for r in others:
        for s in smf:
            a, b = r["retained_mean"]["mean"], s["retained_mean"]["mean"]
            if a is None or b is None:
                continue
            lines.append(f"- {r['label']} keeps less than {s['label']} (mean share of gain kept): "
                         f"**{'yes' if a < b else 'no'}** ({100 * a:.0f} % against {100 * b:.0f} %, last chunk gain "
                         f"{r['last_gain']['mean']:+.1f} against {s['last_gain']['mean']:+.1f} points)")
    slots = results.get("memory_slots")
    for r in smf:
        when = r["half_forgotten_after"]
        if any(w is None for w in when):
            lines.append(f"- capacity, {r['label']}: chunk 1 keeps at least half of its gain through all "
                         f"{len(results['chunks'])} chunks ({results['facts_total']} facts) in at least one seed: more than "
                         f"{results['facts_total'] / slots * 1e6:,.0f} facts per million slots" if slots else "")
        else:
            facts = statistics.fmean(r["capacity_facts"])
            seeds = ", ".join(map(str, r["seeds"]))
            lines.append(f"- capacity, {r['label']}: chunk 1 falls below half of its gain after chunk "
                         f"{', '.join(map(str, when))} (seed{'s' if len(when) > 1 else ''} {seeds}), with {facts:.0f} facts learned: about "
                         f"{facts / slots * 1e6:,.0f} facts per million slots ({slots:,} slots)")
    for label, r in rows.items():
        outside = [p for p in probes if not within_noise(drift_cell(results, r["drift"][p]), results["tolerance"])]
        lines.append(f"- {label}: every probe within its noise of base after the stream: **{'yes' if not outside else 'no'}**"
                     + (" (" + ", ".join(f"{p} {r['drift'][p]['delta']['mean']:+.1f}" for p in outside) + ")" if outside else ""))
    return lines


def retention_plot(results: dict, path: Path) -> None:
    import matplotlib  # why: slow to import (about half a second); only the figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["summary"]
    k = len(results["chunks"])
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows) + 0.6, 3.4), squeeze=False)
    for ax, row in zip(axes[0], rows):
        image = ax.imshow([[100 * v for v in r] for r in row["matrix"]], vmin=0, vmax=100, cmap="viridis")
        for i in range(k):
            for j in range(k):
                v = 100 * row["matrix"][i][j]
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color="w" if v < 60 else "k")
        ax.set_title(row["label"], fontsize=10)
        ax.set_xticks(range(k), [str(j + 1) for j in range(k)])
        ax.set_yticks(range(k), [str(i + 1) for i in range(k)])
        ax.set_xlabel("accuracy on chunk")
    axes[0][0].set_ylabel("after learning chunk")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="accuracy (%)")
    fig.suptitle(f"{results['study']}: retention matrices (chance = 25 %)", fontsize=11)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def stream_plot(results: dict, path: Path) -> None:
    import matplotlib  # why: slow to import (about half a second); only the figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(results["chunks"])
    xs = list(range(1, k + 1))
    probes = results["probes"]
    fig, axes = plt.subplots(1, 2 + len(probes), figsize=(4.2 * (2 + len(probes)), 3.6))
    base = results["base_chunks"]
    axes[0].plot(xs, [100 * statistics.fmean(base[:i]) for i in xs], "k--", label="base")
    axes[1].axhline(100 * base[0], color="k", ls="--", label="base")
    for row in results["summary"]:
        color = family_color(row["family"])
        axes[0].plot(xs, row["mean_learned"], marker="o", color=color, label=row["label"])
        axes[1].plot(xs, [100 * r[0] for r in row["matrix"]], marker="o", color=color, label=row["label"])
        for ax, p in zip(axes[2:], probes):
            points = [(x, y) for x, y in zip(xs, row["drift"][p]["path"]) if y is not None]
            ax.plot(*zip(*points), marker="o", color=color, label=row["label"])
    axes[0].set(title="mean accuracy on the chunks learned so far", xlabel="chunks learned", ylabel="accuracy (%)")
    axes[1].set(title="accuracy on chunk 1", xlabel="chunks learned", ylabel="accuracy (%)")
    for ax, p in zip(axes[2:], probes):
        unit = "%" if results["base"][p]["kind"] == "perplexity" else "points"
        ax.axhspan(-results["tolerance"], results["tolerance"], color="0.9")
        ax.axhline(0, color="k", ls="--")
        ax.set(title=f"{p}: change from base", xlabel="chunks learned", ylabel=f"change ({unit})")
    for ax in axes:
        ax.set_xticks(xs)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_stream_report(results: dict, out: Path) -> None:
    write_text_atomic(out / REPORT_FILE, stream_markdown(results) + "\n")
    if results["summary"]:
        retention_plot(results, out / "retention.png")
        stream_plot(results, out / "stream.png")
