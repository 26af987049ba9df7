"""Publish a finished study into its page: studies/<study>/results/ and the page's result block.

A study page (studies/<study>/README.md) shows a study's results between
`<!-- results:<name>:start -->` and `<!-- results:<name>:end -->`, rendered from a record the
study keeps, with headings one level below the page heading the block sits under. A block
comes from one of two records:

- a study run with `smf compare`: the report's table, notes and checked aims, exactly as smf's
  report code renders them from the study's results.json. A block named after its study folder
  reads studies/<study>/results/; any other name, studies/<study>/results/<name>/.
- a study's own script: where studies/<study>/<name>.py exists, the block renders the script's
  JSON record studies/<study>/results/<name>.json with the script's
  `def markdown(record: dict, level: int) -> str`. The script is imported from its file to
  render, so its module imports nothing heavy at the top (torch and smf's model code inside
  its main()); it writes its record and prints `markdown(record, ...)` when it runs.

The README's short comparison (`<!-- summary:<name>:start -->`) is a few columns of one
block's table. tests/study/test_study_pages.py checks every block and summary against its record.

    python scripts/publish_results.py runs/offline --page studies/offline/README.md --name offline
    python scripts/publish_results.py --regenerate offline   # report.md and the block again from results.json
    python scripts/publish_results.py --pages                 # every block and summary again (script blocks too)
    python studies/heal/heal_check.py studies/heal/results/heal_check.json && python scripts/publish_results.py --pages
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ("report.md", "results.json", "tradeoff.png", "curves.png", "retention.png", "stream.png", "study.json")
SKIP = {"runs", "mutants", "build", "dist", "fixtures"}  # folders that hold no page of ours
HEADING = re.compile(r"^(#{1,6}) ", re.M)
# The README's comparison: these columns of the default study's table.
SUMMARY = {"offline": ["method", "facts (acc)", "pydoc (word_perplexity)", "capitals (substring_match)",
                       "world (substring_match)", "optimizer state"]}


def block_pattern(kind: str, name: str = r"\S+") -> re.Pattern:
    return re.compile(rf"<!-- {kind}:({name}):start -->\n(.*?)\n<!-- {kind}:\1:end -->", re.S)


def pages() -> list[Path]:
    """Every Markdown file of the repository outside hidden, run and fixture folders."""
    return sorted(p for p in ROOT.rglob("*.md")
                  if not any(part.startswith(".") or part in SKIP for part in p.relative_to(ROOT).parts[:-1]))


def blocks(page: Path, kind: str = "results") -> list[tuple[str, str, int]]:
    """(name, text, heading level the block sits under) of each block on a page."""
    text = page.read_text()
    found = []
    for m in block_pattern(kind).finditer(text):
        levels = [len(h) for h in HEADING.findall(outside_code(text[: m.start()]))]
        found.append((m.group(1), m.group(2), levels[-1] if levels else 0))
    return found


def outside_code(text: str) -> str:
    """The text with fenced code blocks left out (a `# comment` in a shell block is no heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def results_folder(page: Path, name: str) -> Path:
    here = page.parent / "results"
    return here if name == page.parent.name else here / name


def report_block(report: str) -> str:
    """The part of a report the page shows: the table, its notes and the aims (no title, no figures)."""
    body = report.split("\n", 2)[2]  # drop the title line
    return body.split("\n![")[0].strip()


def render(results: dict, level: int = 1) -> str:
    """The report's text (without figures) as smf writes it, its title at `level`."""
    from smf.study.report import report_text
    from smf.study.stream import stream_markdown

    return stream_markdown(results, level) + "\n" if "stream" in results else report_text(results, level)


def study_script(page: Path, name: str) -> Path | None:
    """The study's script that renders block `name` from its own record, if the block has one."""
    script = page.parent / f"{name}.py"
    return script if script.is_file() else None


def script_record(page: Path, name: str) -> Path:
    """The JSON record a study's script wrote for block `name`."""
    return page.parent / "results" / f"{name}.json"


def script_markdown(script: Path):
    """`markdown(record, level)` of a study's script, imported from its file (not run)."""
    spec = importlib.util.spec_from_file_location(f"smf_study_{script.parent.name}_{script.stem}".replace("-", "_"), script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "markdown", None)):
        sys.exit(f"{script.relative_to(ROOT)} renders a page block but defines no markdown(record, level)")
    return module.markdown


def rendered_block(page: Path, name: str, level: int) -> str:
    script = study_script(page, name)
    if script is not None:
        record = json.loads(script_record(page, name).read_text())
        return script_markdown(script)(record, level).strip()
    results = json.loads((results_folder(page, name) / "results.json").read_text())
    return report_block(render(results, level))


def table_columns(block: str, columns: list[str]) -> str:
    """The block's first table, cut to `columns` (by header), in their order."""
    lines = block.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = lines[first: next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    keep = [cells[0].index(c) for c in columns]
    return "\n".join("| " + " | ".join(row[i] for i in keep) + " |" if j != 1 else "|" + "---|" * len(keep)
                     for j, row in enumerate(cells))


def summary_table(name: str) -> str:
    """The README's comparison for study block `name`: its columns in SUMMARY, from results.json."""
    (page, level), = [(p, lv) for p in pages() for n, _, lv in blocks(p) if n == name]
    return table_columns(rendered_block(page, name, level), SUMMARY[name])


def replace_block(page: Path, kind: str, name: str, body: str) -> None:
    text = page.read_text()
    start, end = f"<!-- {kind}:{name}:start -->", f"<!-- {kind}:{name}:end -->"
    text = block_pattern(kind, re.escape(name)).sub(lambda _: f"{start}\n{body}\n{end}", text)
    page.write_text(text)


def refresh_pages() -> None:
    """Every result block and summary of every page, rendered again from its record
    (a study's results.json, or a study script's own JSON)."""
    for page in pages():
        for name, _, level in blocks(page):
            replace_block(page, "results", name, rendered_block(page, name, level))
        for name, _, _ in blocks(page, "summary"):
            replace_block(page, "summary", name, summary_table(name))


def page_of(name: str) -> Path:
    found = [p for p in pages() for n, _, _ in blocks(p) if n == name]
    if len(found) != 1:
        sys.exit(f"no single page has a <!-- results:{name}:start --> block (found {len(found)})")
    return found[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("study", type=Path, nargs="?", help="a finished study folder (runs/...)")
    parser.add_argument("--page", type=Path, help="the study page to publish to (studies/<study>/README.md)")
    parser.add_argument("--name", help="the block's name on that page")
    parser.add_argument("--regenerate", metavar="NAME", help="rewrite block NAME's report.md from its results.json with the current report code")
    parser.add_argument("--pages", action="store_true", help="render every block and summary again")
    args = parser.parse_args()
    if args.regenerate:
        regenerate(args.regenerate)
    elif args.pages:
        refresh_pages()
    elif args.study is None or args.page is None or not args.name:
        sys.exit("give a study folder, --page and --name; or --regenerate NAME; or --pages")
    elif not (args.study / "report.md").is_file():
        sys.exit(f"{args.study} has no report.md; run the study to the end first")
    else:
        target = results_folder(args.page.resolve(), args.name)
        target.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            if (args.study / name).is_file():
                shutil.copy2(args.study / name, target / name)
        refresh_pages()
        print(f"published {args.study} to {target}")


def regenerate(name: str) -> None:
    """report.md of a published study, written again from its results.json with the current
    report code (its figures kept), and the page blocks with it."""
    from smf.io import write_text_atomic

    page = page_of(name)
    if study_script(page, name) is not None:
        sys.exit(f"block {name} is rendered by {study_script(page, name).relative_to(ROOT)} from its own record; run --pages")
    target = results_folder(page, name)
    old = (target / "report.md").read_text()
    figures = old[old.index("\n![") + 1:] if "\n![" in old else ""
    write_text_atomic(target / "report.md", render(json.loads((target / "results.json").read_text())) + figures)
    refresh_pages()
    print(f"regenerated {target / 'report.md'}")


if __name__ == "__main__":
    main()
