"""The standard library's docstrings: general English prose from a source no probe draws from.

Every CPython ships its standard library as source. Each module's docstrings (the module's,
its classes', functions' and methods') are read with `ast`, never by importing the module
(some modules act on import), and joined into one Document per module (id
"docstrings/<module>", e.g. "docstrings/json.decoder"). Left out: test suites, IDLE and the
turtle demos, `pydoc_data` (the pydoc probe's source), docstrings shorter than 80
characters, and modules with under 500 characters of docstrings.

Split by module name, as `smf.data.pydoc` splits its topics (sha256 of the name mod 5: 0
held out, 1 validation, else background), so a module stays on its side across Python
versions, whose standard libraries differ (the sizes do too).
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
from functools import lru_cache
from pathlib import Path

from smf.data.templates import question_prompt
from smf.data.types import Document
from smf.errors import SmfError

PARTS = ("background", "heldout", "val")
SKIP = ("test", "tests", "idlelib", "turtledemo", "pydoc_data", "site-packages", "dist-packages", "lib2to3",
        "ensurepip", "__phello__", "__pycache__")
MIN_DOCSTRING, MIN_DOCUMENT = 80, 500


def module_part(name: str) -> str:
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest(), "big") % 5
    return "heldout" if h == 0 else "val" if h == 1 else "background"


def _docstrings(tree: ast.Module) -> list[str]:
    out = []
    for node in [tree, *ast.walk(tree)]:
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= MIN_DOCSTRING:
                out.append(doc)
    return list(dict.fromkeys(out))  # the module node is visited twice


def _modules(part: str | None = None):
    """(module name, parsed source) of every standard-library module smf reads (of `part` only,
    when given: the others are not parsed), in path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise SmfError(f"the standard library's source is not at {root}; install the full Python (not a minimal build)")
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in SKIP or part.startswith("test_") for part in rel.parts):
            continue
        name = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        if part is not None and module_part(name) != part:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a file this Python cannot parse (e.g. a lib2to3 fixture) is not prose
        yield name, tree


@lru_cache(maxsize=1)
def _all_documents() -> tuple[Document, ...]:
    documents = []
    for name, tree in _modules():
        text = "\n\n".join(_docstrings(tree))
        if len(text) >= MIN_DOCUMENT:
            documents.append(Document(id=f"docstrings/{name}", text=text))
    if not documents:
        raise SmfError("no docstrings found in the standard library's source")
    return tuple(documents)


ASK = ("What does {} do in Python?", "What is {} for?", "Can you explain {}?", "Tell me what {} does.")


@lru_cache(maxsize=2)
def docstring_questions(part: str = "background") -> tuple[tuple[str, str], ...]:
    """Questions about the public functions and classes of one part's modules, answered by the
    first paragraph of their docstrings: ("What does `json.dumps` do in Python?", "Serialize
    ``obj`` to a JSON formatted ``str``."). Path order; the wording cycles through `ASK`."""
    if part not in PARTS:
        raise SmfError(f"unknown docstrings part {part!r}; use one of {', '.join(PARTS)}")
    out = []
    for name, tree in _modules(part):
        for node in tree.body:
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef)) or node.name.startswith("_"):
                continue
            members = [node] + (list(node.body) if isinstance(node, ast.ClassDef) else [])
            for member in members:
                if not isinstance(member, (ast.ClassDef, ast.FunctionDef)) or member.name.startswith("_"):
                    continue
                doc = ast.get_docstring(member, clean=True)
                if not doc or len(doc) < MIN_DOCSTRING:
                    continue
                qualname = member.name if member is node else f"{node.name}.{member.name}"
                question = ASK[len(out) % len(ASK)].format(f"`{name}.{qualname}`")
                out.append((question, " ".join(doc.split("\n\n")[0].split())))
    if not out:
        raise SmfError("no documented functions or classes found in the standard library's source")
    return tuple(out)


def docstring_documents(part: str, limit: int | None = None) -> list[Document]:
    """The modules of one part as Documents, in module-path order; `limit` keeps the first ones."""
    if part not in PARTS:
        raise SmfError(f"unknown docstrings part {part!r}; use one of {', '.join(PARTS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise SmfError(f"limit must be a non-negative integer, got {limit!r}")
    documents = [d for d in _all_documents() if module_part(d.id.removeprefix("docstrings/")) == part]
    return documents if limit is None else documents[:limit]


def docstring_texts(part: str = "background", limit: int | None = None) -> list[str]:
    return [d.text for d in docstring_documents(part, limit)]


def question_chats(per_chat: int = 3, most: int = 256) -> list[tuple[tuple[str, str], ...]]:
    """At most `most` chats of `per_chat` questions each about the background modules' functions and
    classes, with their answers (`docstring_questions`), spread over the modules rather than the first few."""
    pairs = docstring_questions("background")
    pairs = pairs[:: max(1, len(pairs) // (most * per_chat))]
    return [pairs[i : i + per_chat] for i in range(0, len(pairs) - per_chat + 1, per_chat)]


def question_chat_texts(limit: int | None = None) -> list[str]:
    """`question_chats` as plain text, each answer after its question's cloze prompt (a model without
    a chat template reads them so; smf learn writes them through the chat template where there is one)."""
    texts = ["\n\n".join(f"{question_prompt(q)} {a}" for q, a in chat) for chat in question_chats()]
    return texts[:limit] if limit is not None else texts
