"""The study pages and the README show published results exactly as they render from each
study's record (smf's report code from a results.json, or a study script's own markdown() from
its JSON), at the heading level of the page they sit in; every study page has such a block; the
README indexes every study folder, stays short, and every relative link resolves."""

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
# Blocks of `smf compare` studies (a results folder with report.md); the rest a study's script renders.
COMPARE_BLOCKS = [b for b in BLOCKS if publish.study_script(b[0], b[1]) is None]


def _id(item):
    page, name, _ = item
    return f"{page.relative_to(ROOT).parent}:{name}"


def test_blocks_are_found_on_the_study_pages():
    """The parametrized checks below must not turn into nothing because the markers vanished."""
    pages = {page for page, _, _ in BLOCKS}
    assert len(BLOCKS) >= 15 and all(page.parent.parent == ROOT / "studies" for page in pages)
    names = [name for _, name, _ in BLOCKS]
    assert len(names) == len(set(names)), "two blocks share a name"


def test_blocks_of_both_kinds_are_found():
    """Script-rendered blocks are checked too: heal's and published's, each with its record."""
    scripted = {(page.parent.name, name) for page, name, _ in BLOCKS if publish.study_script(page, name)}
    assert {("heal", "heal_check"), ("published", "parity")} <= scripted
    assert all(publish.script_record(ROOT / "studies" / s / "README.md", n).is_file() for s, n in scripted)
    assert len(COMPARE_BLOCKS) >= 15


@pytest.mark.parametrize("page, name, level", BLOCKS, ids=[_id(b) for b in BLOCKS])
def test_block_is_what_results_json_renders(page, name, level):
    """Not a stored copy: the report code (or the study's script) renders the record again at the page's level."""
    block = dict((n, text) for n, text, _ in publish.blocks(page))[name]
    assert level >= 1, f"{page}: block {name} sits under no heading"
    assert block.strip() == publish.rendered_block(page, name, level), \
        f"{page.relative_to(ROOT)}: block {name} is not what its record renders to; run scripts/publish_results.py --pages"


def _mutated(text: str) -> str:
    """`text` with its first number of two or more digits after a decimal point changed."""
    m = re.search(r"\.(\d)(\d)", text)
    assert m, "no number to change"
    return text[: m.start(2)] + str((int(m.group(2)) + 1) % 10) + text[m.end(2):]


def _bumped(value):
    """A JSON value with every non-integral number 10 % larger."""
    if isinstance(value, dict):
        return {k: _bumped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bumped(v) for v in value]
    return value * 1.1 if isinstance(value, float) and not value.is_integer() else value


@pytest.mark.parametrize("study, name", [("heal", "heal_check"), ("published", "parity")])
def test_script_block_check_fails_on_a_changed_number(study, name, tmp_path, monkeypatch):
    """A number changed in the record, or in the page's block, makes block and record disagree."""
    page = ROOT / "studies" / study / "README.md"
    (_, block, level), = [b for b in publish.blocks(page) if b[0] == name]
    assert block.strip() == publish.rendered_block(page, name, level)
    record = json.loads(publish.script_record(page, name).read_text())
    changed = tmp_path / f"{name}.json"
    changed.write_text(json.dumps(_bumped(record)))
    monkeypatch.setattr(publish, "script_record", lambda p, n: changed)
    assert block.strip() != publish.rendered_block(page, name, level), "a changed record still renders the page's block"
    monkeypatch.undo()
    assert _mutated(block) != block and _mutated(block).strip() != publish.rendered_block(page, name, level)


def test_parity_record_quotes_the_published_codes_values():
    """The parity block's "published code" column is the fixtures' reference.json, not a copy that drifted."""
    reference = json.loads((ROOT / "tests" / "fixtures" / "parity" / "reference.json").read_text())
    record = json.loads((ROOT / "studies" / "published" / "results" / "parity.json").read_text())
    script = publish.study_script(ROOT / "studies" / "published" / "README.md", "parity")
    spec = importlib.util.spec_from_file_location("parity", script)
    parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parity)
    assert [c["label"] for c in record["checks"]] == [label for label, _, _ in parity.CHECKS]
    for check, (_, _, (kind, key)) in zip(record["checks"], parity.CHECKS):
        assert check["published"] == parity.published(reference, kind, key)


def test_study_scripts_render_without_torch():
    """Rendering a script's block imports the script, not torch or smf's model code."""
    import subprocess
    import sys

    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('p', 'scripts/publish_results.py'); "
            "p = importlib.util.module_from_spec(spec); spec.loader.exec_module(p); "
            "[p.rendered_block(pg, n, lv) for pg in p.pages() for n, _, lv in p.blocks(pg) if p.study_script(pg, n)]; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize("page, name, level", COMPARE_BLOCKS, ids=[_id(b) for b in COMPARE_BLOCKS])
def test_published_report_is_what_results_json_renders(page, name, level):
    folder = publish.results_folder(page, name)
    report = (folder / "report.md").read_text()
    assert report.startswith(publish.render(json.loads((folder / "results.json").read_text()))), \
        f"{folder.relative_to(ROOT)}/report.md differs from what its results.json renders to"


@pytest.mark.parametrize("study", STUDIES, ids=[s.name for s in STUDIES])
def test_every_study_page_has_its_block(study):
    """Every study page shows its results in a generated block, rendered from the study's record:
    a `smf compare` study's results.json, or a study script's own JSON (heal, published)."""
    page = study / "README.md"
    found = publish.blocks(page)
    assert found, f"studies/{study.name}/README.md has no generated result block"
    for name, _, _ in found:
        script = publish.study_script(page, name)
        record = publish.script_record(page, name) if script else publish.results_folder(page, name) / "results.json"
        assert record.is_file(), f"studies/{study.name}: block {name} has no record {record.relative_to(ROOT)}"


def test_every_study_is_checked_for_its_block():
    """The parametrization above covers every study folder, the known ones included."""
    assert {"offline", "sweep", "controls", "optimizers", "probes", "stream", "heal", "published", "learn-check"} <= {s.name for s in STUDIES}


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


def test_offline_page_states_the_measured_run_time():
    """The run times the default study's page and the README state are those recorded in results/timing.json."""
    text = " ".join((ROOT / "studies" / "offline" / "README.md").read_text().split())
    timing = json.loads((ROOT / "studies" / "offline" / "results" / "timing.json").read_text())["runs"]
    after, before = timing["after"], timing["before"]
    parts = after["parts_seconds"]
    evaluations = parts["base evaluation"] + parts["final evaluations"]
    claims = [f"It takes **{round(after['wall_seconds'] / 60)} minutes**", f"{round(parts['training'])} s training",
              f"{round(evaluations)} s in the five evaluations (base {round(parts['base evaluation'])} s",
              f"{round(parts['curves'])} s in the training curves", f"{round(parts['retrofit and background statistics'])} s retrofitting",
              f"took {round(before['wall_seconds'] / 60)} minutes on the same machine"]
    for claim in claims:
        assert claim in text, claim
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (f"takes about {round(after['wall_seconds'] / 60)} minutes on 2 CPU cores once the model is converted (minutes: "
            f"training {parts['training'] / 60:.1f}, evaluations {evaluations / 60:.1f}, training curves {parts['curves'] / 60:.1f}, "
            f"background statistics {parts['retrofit and background statistics'] / 60:.1f})") in readme


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
