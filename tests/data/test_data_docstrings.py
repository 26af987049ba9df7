"""The standard library's docstrings: a general-text source apart from pydoc's topics."""

import pytest

from smf.data import docstrings
from smf.data.docstrings import MIN_DOCUMENT, docstring_documents, docstring_texts, module_part
from smf.data.sources import general_texts
from smf.errors import SmfError


@pytest.fixture(scope="module")
def parts():
    return {p: docstring_documents(p) for p in docstrings.PARTS}


def test_three_disjoint_parts_split_by_module_name(parts):
    ids = [{d.id for d in docs} for docs in parts.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    for part, docs in parts.items():
        assert docs and all(module_part(d.id.removeprefix("docstrings/")) == part for d in docs)
        assert all(len(d.text) >= MIN_DOCUMENT for d in docs)


def test_no_test_suites_and_nothing_from_pydoc_data(parts):
    ids = [d.id for docs in parts.values() for d in docs]
    assert not [i for i in ids if ".test" in i or i.startswith("docstrings/test") or "pydoc_data" in i or "idlelib" in i]
    assert "docstrings/json.decoder" in ids or "docstrings/json" in ids  # an ordinary module is there


def test_background_text_is_the_background_part_only(parts):
    texts = general_texts("docstrings")
    assert texts == docstring_texts("background") == [d.text for d in parts["background"]]
    held = {d.text for d in parts["heldout"]} | {d.text for d in parts["val"]}
    assert not held & set(texts)


def test_the_pydoc_probe_shares_no_text_with_this_background():
    from smf.data.pydoc import pydoc_texts

    background = "\n".join(general_texts("docstrings"))
    probe = pydoc_texts("heldout")
    # no held-out pydoc paragraph of any length appears in the docstrings background
    paragraphs = [p.strip() for t in probe for p in t.split("\n\n") if len(p.strip()) > 200]
    assert paragraphs and not [p for p in paragraphs if p in background]


def test_bad_part_and_limit_are_refused():
    with pytest.raises(SmfError, match="unknown docstrings part 'train'"):
        docstring_documents("train")
    with pytest.raises(SmfError, match="limit must be a non-negative integer"):
        docstring_documents("heldout", limit=-1)
    assert len(docstring_documents("heldout", limit=3)) == 3


def test_questions_ask_about_public_documented_names_of_one_part():
    import ast
    import sysconfig
    from pathlib import Path

    from smf.data.docstrings import ASK, docstring_questions

    pairs = docstring_questions("background")
    assert len(pairs) > 500 and len({q for q, _ in pairs}) == len(pairs)
    for n, (question, answer) in enumerate(pairs):
        assert question == ASK[n % len(ASK)].format(question[question.index("`"): question.rindex("`") + 1])
        assert answer and "\n" not in answer
    # one checked against the source: textwrap.dedent (a background module), its docstring's first paragraph
    assert module_part("textwrap") == "background"
    tree = ast.parse((Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text())
    doc = ast.get_docstring(next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "dedent"))
    assert [a for q, a in pairs if "`textwrap.dedent`" in q] == [" ".join(doc.split("\n\n")[0].split())]
    names = {q[q.index("`") + 1: q.rindex("`")] for q, _ in pairs}
    assert "textwrap.dedent" in names and not [n for n in names if n.rsplit(".", 1)[-1].startswith("_")]
    held = {q[q.index("`") + 1: q.rindex("`")] for q, _ in docstring_questions("heldout")}
    assert held and not held & names and "textwrap.dedent" not in held
