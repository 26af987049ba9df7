"""Experiment: how finely the background statistics' idf separates memory rows.

idf(i) = log((B + 1) / (df(i) + 1)), where df(i) counts the B background batches that read
row i. With few, dense batches df takes only B + 1 values and saturates: a row read by every
batch gets idf 0 and can never win TF-IDF selection, however specific the batch's use of it.
This reads saved background statistics (no model work) and reports, per memory layer: rows
read, rows saturated (df = B), the df histogram and the number of distinct idf values among
rows read.

Writes studies/probes/results/idf-distribution.json (one entry per folder given).
Run: .venv/bin/python studies/probes/idf_distribution.py NAME=FOLDER [NAME=FOLDER ...]
(FOLDER: a retrofitted model folder holding background.safetensors.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch



def summarise(folder: Path) -> dict:
    from smf.selection import BackgroundStats

    bg = BackgroundStats.load(folder)
    layers = {}
    for layer, df in sorted(bg.df.items()):
        read = df > 0
        layers[str(layer)] = {
            "slots": df.numel(), "rows_read": int(read.sum()), "rows_saturated": int((df == bg.batches).sum()),
            "df_histogram": torch.bincount(df, minlength=bg.batches + 1).tolist(),
            "distinct_idf_values_among_read": int(torch.unique(df[read]).numel()),
        }
    return {"folder": str(folder), "batches": bg.batches, "layers": layers}


def main(pairs: list[str]) -> None:
    from smf.io import write_json_atomic

    out = Path(__file__).resolve().parent / "results" / "idf-distribution.json"
    result = json.loads(out.read_text()) if out.is_file() else {}
    for pair in pairs:
        name, _, folder = pair.partition("=")
        result[name] = summarise(Path(folder))
        for layer, s in result[name]["layers"].items():
            print(f"{name} layer {layer}: {s['rows_read']:,} of {s['slots']:,} rows read, {s['rows_saturated']:,} "
                  f"saturated (df = B = {result[name]['batches']}), {s['distinct_idf_values_among_read']} idf values")
    write_json_atomic(out, result)


if __name__ == "__main__":
    if len(sys.argv) < 2 or any("=" not in a for a in sys.argv[1:]):
        raise SystemExit("usage: idf_distribution.py NAME=FOLDER [NAME=FOLDER ...]")
    main(sys.argv[1:])
