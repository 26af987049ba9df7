"""The README shows the published study results exactly as the study wrote them."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks():
    return re.findall(r"<!-- results:(\S+):start -->\n(.*?)\n<!-- results:\1:end -->", README, re.S)


def test_readme_has_its_result_blocks():
    """The parametrized check below must not turn into a skip because the markers vanished."""
    assert {name for name, _ in blocks()} == {"offline", "offline-sweep", "offline-stream"}


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
