"""Nothing smf reads can run code: no pickle loader, no unsafe YAML loader, no transformers load that
could run a model folder's own code. Read from smf's source itself, so a new call cannot slip in."""

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "smf"

# Calls that build objects a file names (pickle, torch's pickle, YAML's Python tags, marshal).
FORBIDDEN = re.compile(r"\b(torch\.load|pickle\.loads?|cPickle|dill|marshal\.loads?|yaml\.(load|unsafe_load|full_load|load_all)|"
                       r"yaml\.(Unsafe|Full)?Loader\b|weights_only\s*=\s*False)")
# YAML and JSON files are parsed only by smf.io, which bounds their size and aliases.
YAML_READERS = {"io.py"}


def sources() -> list[Path]:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20, SRC  # the walk found the package
    return files


def code_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of `path` that are code: comments and docstrings (which name these calls to explain them) left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            docs.update(range(node.lineno, node.end_lineno + 1))
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(n, line.split("#")[0]) for n, line in enumerate(lines, 1) if n not in docs]


def test_no_pickle_or_unsafe_yaml_loader_in_src():
    found = [f"{p.relative_to(SRC)}:{n}: {line.strip()}" for p in sources() for n, line in code_lines(p) if FORBIDDEN.search(line)]
    assert found == []


def test_only_smf_io_parses_yaml():
    found = [f"{p.relative_to(SRC)}:{n}" for p in sources() if p.name not in YAML_READERS
             for n, line in code_lines(p) if re.search(r"\bimport yaml\b|\byaml\.", line)]
    assert found == []


def test_transformers_never_runs_a_folders_code():
    """Every Auto*.from_pretrained passes trust_remote_code=False, so none runs a folder's code or asks on stdin."""
    calls, unsafe = 0, []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id.startswith("Auto")):
                calls += 1
                given = {k.arg: k.value for k in node.keywords}
                if not (isinstance(given.get("trust_remote_code"), ast.Constant) and given["trust_remote_code"].value is False):
                    unsafe.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert calls >= 3 and unsafe == []
