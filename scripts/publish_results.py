"""Publish a finished study into the repository: docs/results/<name>/ and the README.

Copies report.md, results.json and the plots from a study folder, and replaces the
README block between `<!-- results:<name>:start -->` and `<!-- results:<name>:end -->`
with the report's table and checked aims, so the README shows exactly what the run
produced (tests/test_readme.py checks that they agree).

    python scripts/publish_results.py runs/offline --name offline
    python scripts/publish_results.py --regenerate offline   # report.md again from results.json
                                                             # with the current report code
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
    parser.add_argument("study", type=Path, nargs="?")
    parser.add_argument("--name")
    parser.add_argument("--regenerate", metavar="NAME", help="rewrite docs/results/NAME/report.md from its results.json")
    args = parser.parse_args()
    if args.regenerate:
        regenerate(args.regenerate)
        return
    if args.study is None or not args.name:
        sys.exit("give a study folder and --name, or --regenerate NAME")
    if not (args.study / "report.md").is_file():
        sys.exit(f"{args.study} has no report.md; run the study to the end first")
    target = ROOT / "docs" / "results" / args.name
    target.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "results.json", "tradeoff.png", "curves.png", "retention.png", "stream.png", "study.json"):
        if (args.study / name).is_file():
            shutil.copy2(args.study / name, target / name)
    if f"<!-- results:{args.name}:start -->" in (ROOT / "README.md").read_text():
        update_readme(args.name, target)
        print(f"published {args.study} to {target} and README.md")
    else:
        print(f"published {args.study} to {target} (README.md has no block for it)")


def regenerate(name: str) -> None:
    """report.md of a published one-run-per-setting study, written again from its results.json
    (its figures kept), and the README block with it."""
    import json

    sys.path.insert(0, str(ROOT / "src"))
    from smf.io import write_text_atomic
    from smf.study.report import report_text

    target = ROOT / "docs" / "results" / name
    results = json.loads((target / "results.json").read_text())
    if "stream" in results:
        sys.exit(f"{name} is a stream study; its report is written by smf.study.stream")
    old = (target / "report.md").read_text()
    figures = old[old.index("\n![") + 1:] if "\n![" in old else ""
    write_text_atomic(target / "report.md", report_text(results) + figures)
    if f"<!-- results:{name}:start -->" in (ROOT / "README.md").read_text():
        update_readme(name, target)
    print(f"regenerated {target / 'report.md'}")


def update_readme(name: str, target: Path) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
    if start not in text or end not in text:
        sys.exit(f"README.md has no {start} … {end} block")
    block = report_block((target / "report.md").read_text())
    text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: f"{start}\n{block}\n{end}", text, flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    main()
