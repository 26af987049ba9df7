"""Publish a finished study into the repository: docs/results/<name>/ and the README.

Copies report.md, results.json and the plots from a study folder, and replaces the
README block between `<!-- results:<name>:start -->` and `<!-- results:<name>:end -->`
with the report's table and checked aims, so the README shows exactly what the run
produced (tests/test_readme.py checks that they agree).

    python scripts/publish_results.py runs/offline --name offline
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def report_block(report: str) -> str:
    """The part of report.md the README shows: the table, its notes and the aims."""
    body = report.split("\n", 2)[2]  # drop the title line
    return body.split("\n![")[0].strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("study", type=Path)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    if not (args.study / "report.md").is_file():
        sys.exit(f"{args.study} has no report.md; run the study to the end first")
    target = ROOT / "docs" / "results" / args.name
    target.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "results.json", "tradeoff.png", "curves.png", "retention.png", "stream.png", "study.json"):
        if (args.study / name).is_file():
            shutil.copy2(args.study / name, target / name)
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = f"<!-- results:{args.name}:start -->", f"<!-- results:{args.name}:end -->"
    if start not in text or end not in text:
        sys.exit(f"README.md has no {start} … {end} block")
    block = report_block((target / "report.md").read_text())
    text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: f"{start}\n{block}\n{end}", text, flags=re.S)
    readme.write_text(text)
    print(f"published {args.study} to {target} and README.md")


if __name__ == "__main__":
    main()
