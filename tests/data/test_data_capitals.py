"""The capitals knowledge probe: 60 questions with clean aliases."""

import unicodedata

import pytest

from smf.data.capitals import capitals_items, capitals_rows
from smf.errors import SmfError


@pytest.fixture(scope="module")
def items():
    return capitals_items()


def test_sixty_items_in_triviaqa_style(items):
    assert len(items) == 60
    assert len({it.id for it in items}) == 60
    for item in items:
        assert item.question.startswith("What is the capital of ")
        assert not item.question.endswith("?")  # lm-eval's prompt appends it


def test_known_capitals(items):
    by_question = {it.question.removeprefix("What is the capital of "): it.aliases for it in items}
    assert by_question["France"][0] == "Paris"
    assert by_question["Japan"][0] == "Tokyo"
    assert by_question["Germany"][0] == "Berlin"
    assert {"Kyiv", "Kiev"} <= set(by_question["Ukraine"])
    assert {"Brasilia", "Brasília"} <= set(by_question["Brazil"])
    assert "Washington" in by_question["the United States"]
    assert by_question["India"] == ("New Delhi",)


def test_aliases_are_clean(items):
    for item in items:
        assert 1 <= len(item.aliases) <= 6, item
        assert len({a.casefold() for a in item.aliases}) == len(item.aliases)
        for alias in item.aliases:
            assert alias == alias.strip() and alias[0].isupper() and alias[-1] not in "'’\" ,-", alias
            for ch in alias:
                assert ch.isascii() or unicodedata.name(ch).startswith("LATIN"), alias


def test_deterministic_and_sized():
    assert capitals_items(5) == capitals_items()[:5]
    assert capitals_rows(3) == capitals_rows(3)
    with pytest.raises(SmfError, match="positive integer"):
        capitals_items(0)


def test_validation_countries_are_the_next_sixty():
    from smf.data.capitals import capitals_items

    first, nxt = capitals_items(60), capitals_items(60, offset=60)
    assert len(nxt) == 60 and {i.id for i in first}.isdisjoint({i.id for i in nxt})
    assert capitals_items(120)[60:] == nxt
