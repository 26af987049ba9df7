"""The CLI is a layer on top: it imports from smf the public API (`smf.__all__`) and the internal names listed in
src/smf/cli/_internals.py, nothing else (docs/api.md, "What the CLI may import")."""

import ast
from pathlib import Path

import smf
from smf.cli._internals import INTERNAL

CLI = Path(__file__).resolve().parents[2] / "src" / "smf" / "cli"


def cli_imports(folder: Path = CLI) -> dict[str, set[str]]:
    """smf module → the names the CLI's modules import from it ("" for `import smf.x`), at any depth of the code."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "smf":
                found.setdefault(node.module, set()).update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level:
                found.setdefault(f"(relative) {node.module}", set()).update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "smf":
                        found.setdefault(a.name, set()).add("")
    return found


def violations(imports: dict[str, set[str]], public: list[str], internal: dict[str, tuple[str, ...]]) -> list[str]:
    """Every import neither public nor listed, then every listed name no longer imported."""
    out = []
    for module, names in sorted(imports.items()):
        for name in sorted(names):
            allowed = name in public if module == "smf" else name in internal.get(module, ())
            if not allowed:
                what = f"import {module}" if name == "" else f"from {module} import {name}"
                out.append(f"{what}: neither in smf.__all__ nor listed in smf/cli/_internals.py")
    for module, names in sorted(internal.items()):
        out += [f"{module}.{n}: listed in smf/cli/_internals.py but not imported by the CLI" for n in names
                if n not in imports.get(module, set())]
    return out


def test_cli_imports_only_the_public_api_and_listed_internals():
    found = violations(cli_imports(), list(smf.__all__), INTERNAL)
    assert found == [], "\n".join(found)


def test_the_cli_uses_the_public_api():
    assert cli_imports().get("smf"), "the CLI imports nothing from the public API"


def test_check_can_fail():
    imports = {"smf": {"MemoryConfig", "train_loop"}, "smf.memory.layer": {"ProductKeyMemory"}, "smf.io": {"read_json"},
               "smf.models": {""}}
    assert violations(imports, ["MemoryConfig"], {"smf.io": ("read_json", "reading")}) == [
        "from smf import train_loop: neither in smf.__all__ nor listed in smf/cli/_internals.py",
        "from smf.memory.layer import ProductKeyMemory: neither in smf.__all__ nor listed in smf/cli/_internals.py",
        "import smf.models: neither in smf.__all__ nor listed in smf/cli/_internals.py",
        "smf.io.reading: listed in smf/cli/_internals.py but not imported by the CLI",
    ]
