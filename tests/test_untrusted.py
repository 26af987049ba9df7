"""Every file smf reads may be hostile, and every user may be careless: a table of cases, each run
through the real CLI (`smf.cli.main`) in-process, each ending in exit code 2, exactly one
`smf: error:` line, and every file under the case's folder and the shared models unchanged
(nothing created, nothing removed, nothing rewritten). Written as an attacker would try smf:
crafted checkpoints, YAML bombs, bases that changed under a saved run, text that is not what it
seems, outputs that already hold something.

A case is `name: (build, message)`: `build(world, tmp)` writes what the case needs under `tmp`
and returns the argv; `message` must appear in the error line.
"""

import hashlib
from pathlib import Path

import pytest

from smf.cli import main
from test_faults import world  # noqa: F401  (the models and runs the cases start from)


def _write(tmp: Path, name: str, text: str | bytes) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text, encoding="utf-8")
    return path


def _yaml_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + f"\nmethods: {{lora: {{lr: *a{levels}}}}}\n"


CASES = {
    # --- code execution and bounded parsing ---
    "compare, a YAML alias bomb": (lambda w, t: ["compare", "--config", str(_write(t, "s.yaml", _yaml_bomb())), "--out", f"{t}/out"], "alias"),
    # --- a saved run's base, by content ---
    # --- text input, truncation, outputs, one error path ---
}


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under `roots` → its SHA-256, every folder → 'dir'."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            out[str(path)] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_in_one_line_and_nothing_changes(name, world, tmp_path, capsys):  # noqa: F811
    build, message = CASES[name]
    argv = build(world, tmp_path)
    before = snapshot(tmp_path, world["root"])
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("smf: error:")]
    assert code == 2, (code, err)
    assert len(errors) == 1 and message.lower() in errors[0].lower(), err
    assert snapshot(tmp_path, world["root"]) == before, "a refused command changed files"


def test_the_table_is_large():
    assert len(CASES) >= 60
