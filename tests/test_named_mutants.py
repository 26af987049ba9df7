"""scripts/named_mutants.py stays applicable: each named mutant's code is found once in its file, and the
tests meant to kill it exist, so a refactor cannot silently turn a mutant into a no-op."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("named_mutants", ROOT / "scripts" / "named_mutants.py")
named = importlib.util.module_from_spec(spec)
spec.loader.exec_module(named)


@pytest.mark.parametrize("name", sorted(named.MUTANTS))
def test_a_named_mutant_still_applies(name):
    file, old, new, tests = named.MUTANTS[name]
    text = (ROOT / file).read_text()
    assert text.count(old) == 1, f"{name}: its code appears {text.count(old)} times in {file}; update MUTANTS"
    assert old != new
    for test in tests:
        path = ROOT / test.split("::")[0]
        assert path.is_file(), f"{name}: {test} does not exist"
        if "::" in test:
            assert f"def {test.split('::')[1].split('[')[0]}(" in path.read_text(), f"{name}: {test} does not exist"
