"""The README shows the published study results exactly as the study wrote them, and as
smf's report code writes them again from each study's results.json."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks():
    return re.findall(r"<!-- results:(\S+):start -->\n(.*?)\n<!-- results:\1:end -->", README, re.S)


NAMES = {"offline", "offline-sweep", "offline-stream", "offline-controls", "offline-optimizers", "offline-independent", "independent-equal-gain", "independent-smf-seeds",
         "independent-equal-gain-seeds", "format-probe", "independent-doc-df",
         "doc-df-equal-gain", "independent-sweep"}


def test_readme_has_its_result_blocks():
    """The parametrized check below must not turn into a skip because the markers vanished."""
    assert {name for name, _ in blocks()} == NAMES


def test_readme_states_the_two_commands():
    assert "make demo" in README and "make test" in README


@pytest.mark.parametrize("name, block", blocks())
def test_readme_results_are_the_published_report(name, block):
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from publish_results import report_block

    report = ROOT / "docs" / "results" / name / "report.md"
    assert report.is_file(), f"docs/results/{name}/report.md is missing; run scripts/publish_results.py"
    assert block.strip() == report_block(report.read_text()), "README numbers differ from the study's report.md"


@pytest.mark.parametrize("name", sorted(NAMES))
def test_readme_results_regenerate_from_results_json(name):
    """Not a stored copy: the report code renders results.json again, and the README block is that."""
    import json
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from publish_results import report_block

    from smf.study.report import report_text
    from smf.study.stream import stream_markdown

    results = json.loads((ROOT / "docs" / "results" / name / "results.json").read_text())
    text = stream_markdown(results) + "\n" if "stream" in results else report_text(results)
    block = dict(blocks())[name]
    assert block.strip() == report_block(text), f"README block {name} is not what results.json renders to"


def test_readme_demo_time_is_the_published_runs():
    """The demo time the README states is the published study's recorded run time."""
    import json

    found = re.search(r"spent (\d+) s in its (\d+) training runs", README)
    assert found, "the README's demo time sentence is missing"
    runs = json.loads((ROOT / "docs" / "results" / "offline" / "results.json").read_text())["runs"]
    assert int(found.group(2)) == len(runs)
    assert int(found.group(1)) == round(sum(r["wall_seconds"] + r["eval_seconds"] for r in runs))
