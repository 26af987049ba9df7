"""The background's df settings side by side: the four background_df_*.yaml studies' validation numbers
and each background's idf resolution.

    .venv/bin/python studies/probes/background_df_table.py [OUT.json]   (default studies/probes/results/background-df.json)

Reads runs/background-df-{batch,doc,batch64,doc512}; prints a Markdown table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"batch": "16 × 8 sequences, df per batch (the studies')", "doc": "128 × 1, df per sequence (same tokens)",
            "batch64": "64 × 8, df per batch (4× tokens)", "doc512": "512 × 1, df per sequence (4× tokens)"}
COLUMNS = ("facts", "facts-val", "world-val", "capitals-val", "pydoc-val")


def resolution(folder: Path) -> dict:
    """Among the rows the background read, per layer: how many distinct idf values, and how many rows every batch read."""
    from smf.selection import BackgroundStats

    stats = BackgroundStats.load(folder)
    out = {}
    for layer, df in stats.df.items():
        read = df[df > 0]
        out[str(layer)] = {"rows_read": int(read.numel()), "idf_levels": int(read.unique().numel()),
                           "read_by_every_batch": int((df == stats.batches).sum())}
    return {"batches": stats.batches, "layers": out}


def main(out: Path) -> None:
    from smf.io import write_json_atomic

    from smf.study.results import choose_on_validation

    report, rows = {}, []
    for name, label in SETTINGS.items():
        folder = ROOT / "runs" / f"background-df-{name}"
        results = json.loads((folder / "results.json").read_text())
        row = results["summary"][0]
        rows.append(row | {"label": name})
        report[name] = {"setting": label, "config": f"studies/probes/background-df-{name}.yaml",
                        "changes": {c: [row[c]["delta"]["mean"], row[c]["delta_stderr"]] for c in COLUMNS},
                        "background": resolution(folder / "memory_model")}
    probes = ["pydoc-val", "capitals-val", "world-val"]
    # the offline sweep's rule (min_gain 30), and the rule without a minimum gain (tolerance 1)
    chosen = {"min_gain_30": choose_on_validation(rows, "facts-val", probes, 1.0, min_gain=30.0)["smf-tfidf"],
              "no_min_gain": choose_on_validation(rows, "facts-val", probes, 1.0)["smf-tfidf"]}
    report = {"settings": report, "chosen": chosen}
    write_json_atomic(out, report)
    units = {c: "%" if c.startswith("pydoc") else "pp" for c in COLUMNS}
    print("| background | idf levels (mean of 3 layers) | rows read by every batch | "
          + " | ".join(f"{c} ({units[c]})" for c in COLUMNS) + " |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for r in report["settings"].values():
        layers = r["background"]["layers"].values()
        levels = sum(v["idf_levels"] for v in layers) / len(layers)
        every = sum(v["read_by_every_batch"] for v in layers) / len(layers)
        cells = [f"{m:+.1f} ± {se:.1f}" if se is not None else f"{m:+.1f}" for m, se in r["changes"].values()]
        print(f"| {r['setting']} | {levels:.0f} | {every:,.0f} | " + " | ".join(cells) + " |")
    print(f"chosen: {chosen}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results" / "background-df.json")
