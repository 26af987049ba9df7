"""The pydoc perplexity probe: three disjoint, deterministic, sizeable parts."""

import pytest
from pydoc_data.topics import topics

from smf.data.pydoc import PARTS, pydoc_documents, pydoc_texts, topic_part
from smf.errors import SmfError


def test_parts_disjoint_and_cover_every_topic():
    parts = {part: pydoc_documents(part) for part in PARTS}
    ids = {part: {d.id for d in docs} for part, docs in parts.items()}
    for a in PARTS:
        for b in PARTS:
            if a < b:
                assert ids[a].isdisjoint(ids[b]), (a, b)
                assert {d.text for d in parts[a]}.isdisjoint({d.text for d in parts[b]})
    assert set().union(*ids.values()) == {f"pydoc/{name}" for name in topics}


def test_deterministic_and_sorted():
    assert pydoc_documents("heldout") == pydoc_documents("heldout")
    ids = [d.id for d in pydoc_documents("background")]
    assert ids == sorted(ids)
    # The rule depends on the topic name only (a regression check of the hash rule).
    assert topic_part("floating") == "heldout" and topic_part("assert") == "val" and topic_part("with") == "background"


def test_sizes_are_useful():
    total = sum(map(len, topics.values()))
    heldout = sum(map(len, pydoc_texts("heldout")))
    val = sum(map(len, pydoc_texts("val")))
    background = sum(map(len, pydoc_texts("background")))
    assert heldout + val + background == total
    assert heldout >= 40_000 and val >= 20_000 and background >= 250_000
    assert 0.08 <= heldout / total <= 0.35


def test_limit_and_bad_part():
    assert len(pydoc_documents("heldout", limit=3)) == 3
    assert pydoc_texts("heldout", limit=2) == [d.text for d in pydoc_documents("heldout")[:2]]
    with pytest.raises(SmfError, match="unknown pydoc part"):
        pydoc_documents("test")
