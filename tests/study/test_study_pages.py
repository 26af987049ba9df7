"""The study pages and the README show published results exactly as smf's report code renders
them from each study's results.json, at the heading level of the page they sit in; the README
indexes every study folder, stays short, and every relative link resolves."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
STUDIES = sorted(p for p in (ROOT / "studies").iterdir() if p.is_dir())


def _publish():
    """scripts/publish_results.py, which writes the blocks this file checks."""
    spec = importlib.util.spec_from_file_location("publish_results", ROOT / "scripts" / "publish_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


publish = _publish()
BLOCKS = [(page, name, level) for page in publish.pages() for name, _, level in publish.blocks(page)]


def _id(item):
    page, name, _ = item
    return f"{page.relative_to(ROOT).parent}:{name}"


def test_blocks_are_found_on_the_study_pages():
    """The parametrized checks below must not turn into nothing because the markers vanished."""
    pages = {page for page, _, _ in BLOCKS}
    assert len(BLOCKS) >= 15 and all(page.parent.parent == ROOT / "studies" for page in pages)
    names = [name for _, name, _ in BLOCKS]
    assert len(names) == len(set(names)), "two blocks share a name"


@pytest.mark.parametrize("page, name, level", BLOCKS, ids=[_id(b) for b in BLOCKS])
def test_block_is_what_results_json_renders(page, name, level):
    """Not a stored copy: the report code renders results.json again at the page's level."""
    block = dict((n, text) for n, text, _ in publish.blocks(page))[name]
    assert level >= 1, f"{page}: block {name} sits under no heading"
    assert block.strip() == publish.rendered_block(page, name, level), \
        f"{page.relative_to(ROOT)}: block {name} is not what its results.json renders to; run scripts/publish_results.py --pages"


@pytest.mark.parametrize("page, name, level", BLOCKS, ids=[_id(b) for b in BLOCKS])
def test_published_report_is_what_results_json_renders(page, name, level):
    folder = publish.results_folder(page, name)
    report = (folder / "report.md").read_text()
    assert report.startswith(publish.render(json.loads((folder / "results.json").read_text()))), \
        f"{folder.relative_to(ROOT)}/report.md differs from what its results.json renders to"


def test_every_study_page_has_its_block():
    """A study whose results hold a study's results.json shows them in a generated block;
    heal, learn-check and published keep no results.json (scripts and configs, not smf compare)."""
    with_results = {s.name for s in STUDIES if any((s / "results").rglob("results.json"))}
    assert {"offline", "sweep", "controls", "optimizers", "probes", "stream"} <= with_results
    for name in with_results:
        page = ROOT / "studies" / name / "README.md"
        assert publish.blocks(page), f"studies/{name}/README.md has no generated result block"


@pytest.mark.parametrize("study", STUDIES, ids=[s.name for s in STUDIES])
def test_study_folder_has_a_page_linked_from_the_readme(study):
    assert (study / "README.md").is_file(), f"studies/{study.name} has no README.md"
    assert f"](studies/{study.name}/)" in README.read_text(), f"the README's index does not link studies/{study.name}/"


def _headings(text):
    return [len(h) for h in publish.HEADING.findall(publish.outside_code(text))]


@pytest.mark.parametrize("page", [README, *(s / "README.md" for s in STUDIES)],
                         ids=["README", *(s.name for s in STUDIES)])
def test_headings_form_an_outline(page):
    """One title, and no heading deeper than one below the heading before it (blocks included)."""
    levels = _headings(page.read_text())
    assert levels[0] == 1 and levels.count(1) == 1, f"{page.relative_to(ROOT)}: one # title first"
    for before, after in zip(levels, levels[1:]):
        assert after <= before + 1, f"{page.relative_to(ROOT)}: a heading of level {after} under one of {before}"


def test_outline_check_fails_on_a_block_at_the_wrong_level():
    """The check above catches the broken outline of a block rendered for the wrong level."""
    page, name, level = next(b for b in BLOCKS if "Aims, checked" in dict((n, t) for n, t, _ in publish.blocks(b[0]))[b[1]])
    assert _headings(publish.rendered_block(page, name, level))[0] == level + 1
    assert _headings(publish.rendered_block(page, name, level + 1))[0] == level + 2


def _links(page):
    text = publish.outside_code(page.read_text())
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http://", "https://", "#", "mailto:"))]


@pytest.mark.parametrize("page", [README, *(s / "README.md" for s in STUDIES), ROOT / "CHANGELOG.md"],
                         ids=["README", *(s.name for s in STUDIES), "CHANGELOG"])
def test_relative_links_resolve(page):
    missing = [t for t in _links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_readme_is_short_and_newcomer_first():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert not re.search(r"^## Aims, checked", text, re.M)
    assert "make demo" in text and "make test" in text
    order = ["## Two commands", "## Quick start", "## The comparison", "## How SMF works", "## The CLI at a glance",
             "## Configs", "## GPUs", "## Studies", "## Development"]
    places = [text.index(h) for h in order]
    assert places == sorted(places)
    assert not re.search(r"this version|today's default|\.\./shared|/work/", text)


def test_readme_comparison_is_the_default_studys_table():
    """The README's trimmed table is the offline study's, cut to a few columns, from its results.json."""
    (name, table, _), = publish.blocks(README, "summary")
    assert name == "offline" and table.strip() == publish.summary_table("offline")
    assert table.count("\n| ") == 5  # base and the study's four methods


def test_readme_cli_lists_every_subcommand():
    from smf.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices
    listed = set(re.findall(r"^smf (\w+) ", README.read_text(), re.M))
    assert set(commands) == listed


def test_readme_config_example_loads():
    from smf.study.config import StudyConfig

    example = re.search(r"```yaml\n(.*?)```", README.read_text(), re.S).group(1)
    config = StudyConfig.from_dict(yaml.safe_load(example))
    config.check("study")
    assert len(config.runs()) == 4


def test_offline_page_states_the_published_run_time():
    """The run time the default study's page states is its published run's recorded time."""
    text = (ROOT / "studies" / "offline" / "README.md").read_text()
    found = re.search(r"spent (\d+) s in its (\d+) training runs", text)
    assert found, "the offline page's run time sentence is missing"
    runs = json.loads((ROOT / "studies" / "offline" / "results" / "results.json").read_text())["runs"]
    assert int(found.group(2)) == len(runs)
    assert int(found.group(1)) == round(sum(r["wall_seconds"] + r["eval_seconds"] for r in runs))


SCRIPTS = sorted((ROOT / "studies").rglob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[str(s.relative_to(ROOT / "studies")) for s in SCRIPTS])
def test_study_scripts_use_public_names_only(script):
    """A study's script is an example of the public API: no private smf name, no sys.path edit,
    and every smf name it imports still exists (the scripts run for hours, so no test runs them)."""
    import ast
    import importlib

    tree = ast.parse(script.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("smf"):
            private = [a.name for a in node.names if a.name.startswith("_")] + [p for p in node.module.split(".") if p.startswith("_")]
            assert not private, f"{script.name} imports private smf names {private}"
            module = importlib.import_module(node.module)
            gone = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not gone, f"{script.name}: {node.module} has no {gone}"
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
            raise AssertionError(f"{script.name} edits sys.path")
