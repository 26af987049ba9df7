"""Tables and plots of a comparison study: report.md, tradeoff.png, curves.png."""

from __future__ import annotations

import statistics
from pathlib import Path

from smf.io import write_text_atomic
from smf.methods import families
from smf.names import REPORT_FILE
from smf.stats import Z95, dominates, noise
from smf.study.config import entry_of


def family_color(family: str) -> str:
    known = families().get(family)
    return known.color if known else "k"


def compared_as(family: str) -> str | None:
    known = families().get(family)
    return known.compared_as if known else None


def _fmt_value(kind: str, v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}" if kind == "perplexity" else f"{100 * v:.1f}"


def _fmt_delta(d: dict, unit: str, stderr: float | None = None) -> str:
    if d["mean"] is None:
        return "–"
    spread = f" ± {d['std']:.1f}" if d["n"] > 1 else (f" ± {stderr:.1f}" if stderr is not None else "")
    return f"{d['mean']:+.1f}{spread}{unit}"


def _bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "–"


def _trainable(row: dict) -> str:
    """Trainable parameters; for SMF the table size and, in brackets, the parameters its rows trained."""
    text = f"{row['trainable_parameters']['mean']:,.0f}"
    trained = row.get("parameters_trained", {}).get("mean")
    return text + (f" ({trained / 1e6:.1f}M trained)" if trained is not None else "")


def _cell(row: dict, label: str, kind: str) -> str:
    if label not in row:
        return "–"
    unit = "%" if kind == "perplexity" else " pp"
    value = row[label]["value"]
    v = _fmt_value(kind, value["mean"]) + (f" ± {_fmt_value(kind, value['std'])}" if value["n"] > 1 and kind != "perplexity" else "")
    return f"{v} ({_fmt_delta(row[label]['delta'], unit, row[label]['delta_stderr'])})"


def markdown(results: dict) -> str:
    base, task, probes, extra = results["base"], results["task"], results["probes"], results["extra_tasks"]
    columns = [task, *extra, *probes]
    kinds = {c: base[c]["kind"] for c in columns}
    head = "| method | " + " | ".join(f"{c} ({base[c]['metric']})" for c in columns) + " | trainable params | train tok/s | peak memory | optimizer state |"
    lines = [head, "|" + "---|" * (len(columns) + 5)]
    base_cells = []
    for c in columns:
        b = base[c]
        err = f" ± {_fmt_value(b['kind'], b['stderr'])}" if b["stderr"] is not None and b["kind"] != "perplexity" else ""
        base_cells.append(_fmt_value(b["kind"], b["value"]) + err)
    lines.append("| **base** | " + " | ".join(base_cells) + " | – | – | – | – |")
    if results.get("healed"):  # the memory model before training (evaluation.healed)
        healed = results["healed"]
        lines.append("| **healed** (before training) | " + " | ".join(_cell(healed, c, kinds[c]) for c in columns) + " | – | – | – | – |")
    validation = results["validation"]
    chosen = set(validation["chosen"].values())
    for row in results["summary"]:
        mark = " ★" if row["label"] in chosen else ""
        cells = [_cell(row, c, kinds[c]) for c in columns]
        lines.append(
            f"| {row['label']}{mark} | " + " | ".join(cells)
            + f" | {_trainable(row)} | {_speed(results, row)}"
            + f" | {_bytes(row['peak_memory_bytes']['mean'])} | {_bytes(row['optimizer_state_bytes']['mean'])} |"
        )
    seeds = sorted({s for row in results["summary"] for s in row["seeds"]})
    n_items = ", ".join(f"{c}: {base[c]['n']}" for c in columns)
    notes = [
        "",
        f"Accuracies in %, perplexities as word perplexity; in brackets the change from the base model "
        f"(points for accuracy, relative % for perplexity). Seeds: {', '.join(map(str, seeds))}; "
        + ("± is the standard deviation over seeds." if len(seeds) > 1 else "± on a change is the paired standard error over items (one seed).")
        + (" The aims below weigh a change by the seeds' standard error combined with the items' (every seed scores the same items)."
           if len(seeds) > 1 and any(row[c].get("delta_stderr") is not None for row in results["summary"] for c in columns if c in row)
           else ""),
        f"Items per task: {n_items}. Memory columns: peak process memory during training (CPU: RSS) and optimizer state.",
        "train tok/s: the median over seeds"
        + ("; † = this setting's runs differ in speed by more than 2× (some shared the machine with other work): "
           "compare speeds only between unmarked rows." if any(_disturbed(results, r) for r in results["summary"]) else "."),
    ]
    if chosen:
        probes_text = ", ".join(f"`{p}`" for p in validation["probes"])
        min_gain = validation["min_gain"]
        if min_gain is not None:
            rule = (f"among settings that gain at least {min_gain:g} points on `{validation['task']}`, the one whose "
                    f"validation probes ({probes_text or 'none'}) drift least from base (else the largest gain)")
        else:
            rule = (f"the best `{validation['task']}` score among settings whose validation probes "
                    f"({probes_text or 'none'}) stay within {results['tolerance']:g} points of base "
                    "(else the smallest validation drift)")
        notes.append(f"★ = the family's setting chosen on validation data only: {rule}.")
    return "\n".join(lines + notes)


SPEED_SPREAD = 2.0  # a setting whose seeds' speeds differ by more than this factor was disturbed


def _speeds(results: dict, row: dict) -> list[float]:
    return [r["train_tokens_per_s"] for r in results.get("runs", []) if r["label"] == row["label"]]


def _disturbed(results: dict, row: dict) -> bool:
    """Whether the setting's runs differ in speed by more than SPEED_SPREAD: on one machine the
    same setting trains at the same speed, unless other work shared the machine."""
    speeds = _speeds(results, row)
    return len(speeds) > 1 and max(speeds) > SPEED_SPREAD * min(speeds)


def _speed(results: dict, row: dict) -> str:
    speeds = _speeds(results, row)
    value = statistics.median(speeds) if speeds else row["train_tokens_per_s"]["mean"]
    return f"{value:.0f}" + (" †" if _disturbed(results, row) else "")


def validation_markdown(results: dict) -> str:
    """The validation numbers that chose the ★ settings (never reported as results)."""
    base = results["base"]
    columns = [results["validation"]["task"], *results["validation"]["probes"]]
    lines = ["| method | " + " | ".join(f"{c} ({base[c]['metric']})" for c in columns) + " |", "|" + "---|" * (len(columns) + 1)]
    lines.append("| **base** | " + " | ".join(_fmt_value(base[c]["kind"], base[c]["value"]) for c in columns) + " |")
    chosen = set(results["validation"]["chosen"].values())
    for row in results["summary"]:
        mark = " ★" if row["label"] in chosen else ""
        lines.append(f"| {row['label']}{mark} | " + " | ".join(_cell(row, c, base[c]["kind"]) for c in columns) + " |")
    return "\n".join(lines)


def within_words(row: dict, probes: list[str], tolerance: float) -> str:
    """Whether every probe's change stays within `tolerance` of base: beyond the 95 % uncertainty
    (|mean| + 1.96 standard errors, see `noise`), on the mean only, or not at all."""
    limit = tolerance + 1e-9  # a change of exactly the tolerance (4 items of 400 is 1 point) is within it
    if not all(abs(row[p]["delta"]["mean"]) <= limit for p in probes):
        return f"not every probe within {tolerance:g} of base."
    bounds = {p: abs(row[p]["delta"]["mean"]) + Z95 * noise(row[p]) for p in probes}
    if all(b <= limit for b in bounds.values()):
        return f"every probe within {tolerance:g} of base beyond the 95 % uncertainty."
    widest = max(bounds, key=bounds.get)
    return (f"every probe within {tolerance:g} of base on the mean, not beyond the 95 % uncertainty "
            f"({widest}: {row[widest]['delta']['mean']:+.1f} ± {Z95 * noise(row[widest]):.1f}).")


def verdict(results: dict) -> str:
    """The aims, checked against the numbers — whatever they show.

    Which SMF setting counts is decided on validation data only (the ★ choice; a family's
    only setting needs none): never by the reported probes. Dominance counts only beyond
    noise (see `dominates`).
    """
    task, probes, tolerance = results["task"], results["probes"], results["tolerance"]
    rows = results["summary"]
    smf = [r for r in rows if compared_as(r["family"]) == "smf"]
    others = [r for r in rows if compared_as(r["family"]) == "baseline"]
    chosen = results["validation"]["chosen"]
    lines = []
    families: dict[str, list[dict]] = {}
    for r in smf:
        families.setdefault(r["family"], []).append(r)
    for family, settings in families.items():
        pick = next((r for r in settings if r["label"] == chosen.get(family)), settings[0] if len(settings) == 1 else None)
        if pick is None:
            lines.append(f"- {family}: {len(settings)} settings and no validation task to choose one; "
                         "none is picked on the reported numbers.")
            continue
        how = "chosen on validation" if family in chosen else "its only setting"
        if not probes:
            lines.append(f"- {family} ({how}: **{pick['label']}**): {pick[task]['delta']['mean']:+.1f} pp on {task}; "
                         "no forgetting probes are reported in this study (validation probes, if any, are below).")
            continue
        drift = ", ".join(f"{p} {pick[p]['delta']['mean']:+.1f}" for p in probes)
        lines.append(f"- {family} ({how}: **{pick['label']}**): {pick[task]['delta']['mean']:+.1f} pp on {task}; {drift}: "
                     + within_words(pick, probes, tolerance))
    for s in smf:
        beaten = [o["label"] for o in others if dominates(s, o, task, probes)]
        if beaten:
            lines.append(f"- {s['label']} Pareto-dominates {', '.join(beaten)} beyond noise "
                         "(no worse in gain or any drift, better by more than 2 standard errors on one).")
    free = [o["label"] for o in others if not any(dominates(s, o, task, probes) for s in smf)]
    if free:
        lines.append(f"- Not dominated by any SMF setting beyond noise: {', '.join(free)}.")
    return "\n".join(lines)


def write_report(results: dict, out: Path) -> None:
    out = Path(out)
    plots = []
    if results["summary"]:
        if results["probes"]:  # gain against forgetting needs a forgetting probe
            tradeoff_plot(results, out / "tradeoff.png")
            plots.append("![gain against forgetting](tradeoff.png)")
        if any(r["curve"] for r in results["runs"]):
            curves_plot(results, out / "curves.png")
            plots.append("![training curves](curves.png)")
    write_text_atomic(out / REPORT_FILE, report_text(results) + "\n\n".join(plots) + "\n")


def report_text(results: dict, level: int = 1) -> str:
    """report.md without its figures: title, table, aims checked, validation. `level` is the
    title's heading level and its sections sit one below, so a page can embed the report under
    a heading of its own (a block under `###` asks for 3: its sections are `####`)."""
    title, section = "#" * level, "#" * (level + 1)
    text = f"{title} {results['study']}: gain against forgetting\n\n{markdown(results)}\n\n{section} Aims, checked\n\n{verdict(results) if results['summary'] else '- no finished runs yet'}\n\n"
    if results["validation"]["task"] and results["summary"]:
        text += f"{section} Validation (chooses the ★ settings; not a result)\n\n{validation_markdown(results)}\n\n"
    return text


def tradeoff_plot(results: dict, path: Path) -> None:
    import matplotlib  # why: slow to import (about half a second); only the figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task, probes, base, tolerance = results["task"], results["probes"], results["base"], results["tolerance"]
    chosen = set(results["validation"]["chosen"].values())
    fig, axes = plt.subplots(1, len(probes), figsize=(5.2 * len(probes), 4.2), squeeze=False)
    for ax, probe in zip(axes[0], probes):
        unit = "%" if base[probe]["kind"] == "perplexity" else "pp"
        ax.axvspan(-tolerance, tolerance, color="0.92", zorder=0, label=f"within {tolerance:g} {unit} of base")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.axvline(0, color="0.6", lw=0.8)
        entries = {}  # one line per config entry (a sweep); entries of one family share a colour
        for row in results["summary"]:
            entries.setdefault(entry_of(row["label"]), []).append(row)
        seen_families: dict[str, int] = {}
        for entry, rows in entries.items():
            family = rows[0]["family"]
            nth = seen_families.get(family, 0)
            seen_families[family] = nth + 1
            marker = "os^Dv"[nth % 5]
            rows = sorted(rows, key=lambda r: r[task]["delta"]["mean"])
            xs = [r[probe]["delta"]["mean"] for r in rows]
            ys = [r[task]["delta"]["mean"] for r in rows]
            color = family_color(family)
            ax.errorbar(xs, ys, xerr=[r[probe]["delta"]["std"] for r in rows], yerr=[r[task]["delta"]["std"] for r in rows],
                        fmt="-" + marker, color=color, label=entry, capsize=2, ms=5, lw=1.2, alpha=0.9)
            for r, x, y in zip(rows, xs, ys):
                if r["label"] in chosen:
                    ax.plot([x], [y], marker="*", ms=15, color=color, mec="k", zorder=5)
        better = "lower is better" if base[probe]["kind"] == "perplexity" else "higher is better"
        ax.set_xlabel(f"change in {probe} ({unit}; {better})")
        ax.set_ylabel(f"gain on {task} (pp)")
        ax.set_title(f"{task} gain vs {probe} drift")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(f"{results['study']}: learning against forgetting (★ chosen on validation)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_plot(results: dict, path: Path) -> None:
    import matplotlib  # why: slow to import (about half a second); only the figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task, probes = results["task"], results["probes"]
    panels = ["loss", task, *probes]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False)
    first_seed = min(r["seed"] for r in results["runs"])
    base_curve = results.get("base_curve", {})
    for run in results["runs"]:
        if run["seed"] != first_seed:
            continue
        color = family_color(run["family"])
        style = "-" if run["label"] == run["family"] else "--"
        losses = [(c["step"], c["loss"]) for c in run["curve"] if "loss" in c]
        if losses:
            axes[0][0].plot(*zip(*losses), style, color=color, label=run["label"], lw=1)
        for ax, name in zip(axes[0][1:], [task, *probes]):
            points = [(c["step"], c["eval"][name]) for c in run["curve"] if "eval" in c and name in c["eval"]]
            if name in base_curve:
                points = [(0, base_curve[name])] + points
            if points:
                ax.plot(*zip(*points), style + "o", color=color, ms=3, lw=1)
    axes[0][0].set_title("training loss (target tokens)")
    axes[0][0].set_yscale("log")
    for ax, name in zip(axes[0][1:], [task, *probes]):
        kind = results["base"][name]["kind"]
        ax.set_title(f"{name} during training" + (" (ppl)" if kind == "perplexity" else " (acc)"))
        if name in base_curve:
            ax.axhline(base_curve[name], color="0.5", lw=0.8, ls=":")
    for ax in axes[0]:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{results['study']}: training curves (seed {first_seed}; evaluation points on subsets)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
