"""The task registry: a task is a dataset loader, a scorer kind and default options.

A task is named by a string ("medmcqa") or by a mapping with options, as in a YAML
config:

    tasks:
      - medmcqa                                   # letter format, hub validation split
      - {name: medmcqa, format: cloze, source: data/medmcqa_dev.jsonl, as: medmcqa_cloze}
      - {name: facts, n_facts: 60, seed: 1}
      - {name: wikitext, max_length: 1024, limit: 20}

Options of every task: `as` (the key in the results; default the name) and `limit`
(first N items). Data options belong to the task (e.g. `source`, `split`); scoring
options to its kind: mcq `format`; qa `prompt`, `match`, `stop`,
`max_new_tokens`; perplexity `max_length`, `max_batch_tokens`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from smf.data import capitals, facts, hub, pydoc
from smf.errors import SmfError

# Scoring options of each kind and their defaults (a task's own defaults override).
# qa `match` and `stop` of None take the prompt style's (smf.evaluate.qa.STYLES).
SCORING_DEFAULTS = {
    "mcq": {"format": "letter"},
    "qa": {"prompt": "plain", "match": None, "stop": None, "max_new_tokens": 32},
    # lm-eval would use the model's whole context (8192 for SmolLM2, 32768 for Qwen2.5);
    # 2048 keeps CPU runs practical. Pass the same max_length to both for parity.
    "perplexity": {"max_length": 2048, "max_batch_tokens": 4096},
}


@dataclass(frozen=True)
class TaskDef:
    """A registered task: how to load its items and how to score them by default."""

    name: str
    kind: str  # "mcq" | "qa" | "perplexity"
    about: str
    load: Callable[..., list]  # (limit=..., **data options) -> items
    data_options: Mapping[str, Any] = field(default_factory=dict)  # name -> default, passed to `load`
    scoring: Mapping[str, Any] = field(default_factory=dict)  # scorer option defaults


@dataclass
class Task:
    """A task ready to run: its items are loaded, its options resolved."""

    label: str
    definition: TaskDef
    items: list
    options: dict  # scoring options, defaults filled in
    data_options: dict

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def kind(self) -> str:
        return self.definition.kind


def _facts(split: str, form: str) -> Callable[..., list]:
    def load(limit=None, **options):
        try:
            config = facts.FactsConfig(**options)
        except (TypeError, ValueError) as e:
            raise SmfError(f"facts options: {e}") from None
        items = (facts.load_facts_mcq if form == "mcq" else facts.load_facts_qa)(split=split, config=config)
        return items[:limit] if limit is not None else items

    return load


def _pydoc(limit=None, part="heldout"):
    return pydoc.pydoc_documents(part=part, limit=limit)


def _capitals(limit=None, n=60, offset=0):
    items = capitals.capitals_items(n=n, offset=offset)
    return items[:limit] if limit is not None else items


FACTS = {f.name: f.default for f in dataclasses.fields(facts.FactsConfig)}  # n_facts, seed, ...
HUB = {"source": None, "split": "validation"}

REGISTRY: dict[str, TaskDef] = {
    t.name: t
    for t in [
        TaskDef("medmcqa", "mcq", "MedMCQA validation (openlifescienceai/medmcqa), lm-eval letter prompt",
                hub.load_medmcqa, HUB, {"format": "letter"}),
        TaskDef("triviaqa", "qa", "TriviaQA rc.nocontext validation, greedy answer, exact match",
                hub.load_triviaqa, HUB, {"prompt": "plain"}),
        TaskDef("wikitext", "perplexity", "WikiText-2 raw test, document-level rolling perplexity",
                hub.load_wikitext, {"source": None, "split": "test", "version": "wikitext-2-raw-v1"}, {}),
        TaskDef("wikitext-103", "perplexity", "WikiText-103 raw test, document-level rolling perplexity",
                hub.load_wikitext, {"source": None, "split": "test", "version": "wikitext-103-raw-v1"}, {}),
        TaskDef("facts", "mcq", "fictional facts, held-out question wording, 4-way cloze",
                _facts("test", "mcq"), FACTS, {"format": "cloze"}),
        TaskDef("facts-val", "mcq", "fictional facts, validation wording, 4-way cloze",
                _facts("val", "mcq"), FACTS, {"format": "cloze"}),
        TaskDef("facts-control", "mcq", "unseen fictional facts (control: stays at chance), 4-way cloze",
                _facts("control", "mcq"), FACTS, {"format": "cloze"}),
        TaskDef("facts-qa", "qa", "fictional facts as open questions, greedy answer, exact match",
                _facts("test", "qa"), FACTS, {"prompt": "plain"}),
        TaskDef("pydoc", "perplexity", "held-out English prose of pydoc_data.topics, rolling perplexity",
                _pydoc, {"part": "heldout"}, {}),
        TaskDef("pydoc-val", "perplexity", "validation part of pydoc_data.topics (for choosing settings), rolling perplexity",
                _pydoc, {"part": "val"}, {}),
        TaskDef("capitals", "qa", "capitals of the most populous countries, asked through the chat template",
                _capitals, {"n": 60, "offset": 0}, {"prompt": "chat"}),
        TaskDef("capitals-val", "qa", "capitals of the next 60 countries (for choosing settings), chat template",
                _capitals, {"n": 60, "offset": 60}, {"prompt": "chat"}),
        TaskDef("capitals-plain", "qa", "capitals with lm-eval's plain TriviaQA prompt",
                _capitals, {"n": 60, "offset": 0}, {"prompt": "plain"}),
    ]
}


def task_names() -> list[str]:
    return list(REGISTRY)


@dataclass(frozen=True)
class TaskSpec:
    """A checked task request: which task, under which label, with which options."""

    label: str
    definition: TaskDef
    limit: int | None
    data_options: dict
    options: dict  # scoring options, defaults filled in


def parse_spec(spec: str | Mapping[str, Any], *, limit: int | None = None) -> TaskSpec:
    """Check a task name or option mapping without loading any data.

    `limit` applies where the spec sets none. Raises SmfError for an unknown task or
    option, or a bad option value, naming the choices.
    """
    if isinstance(spec, TaskSpec):
        return spec
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = options.pop("name", None)
    if name not in REGISTRY:
        raise SmfError(f"unknown task {name!r}; choose from: {', '.join(REGISTRY)}")
    definition = REGISTRY[name]
    label = str(options.pop("as", name))
    limit = options.pop("limit", limit)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise SmfError(f"task {label}: limit must be a positive integer, got {limit!r}")
    data_defaults = dict(definition.data_options)
    scoring_names = SCORING_DEFAULTS[definition.kind]
    unknown = [k for k in options if k not in data_defaults and k not in scoring_names]
    if unknown:
        allowed = ["as", "limit", *data_defaults, *scoring_names]
        raise SmfError(f"task {label}: unknown option {unknown[0]!r}; options of {name}: {', '.join(allowed)}")
    scoring = {
        **SCORING_DEFAULTS[definition.kind],
        **definition.scoring,
        **{k: v for k, v in options.items() if k in scoring_names},
    }
    _check_scoring(label, definition.kind, scoring)
    data_options = {k: options.get(k, v) for k, v in data_defaults.items()}
    return TaskSpec(label, definition, limit, data_options, scoring)


def load_task(spec: str | Mapping[str, Any] | TaskSpec, *, limit: int | None = None) -> Task:
    """Check a task request (see `parse_spec`) and load its items."""
    spec = parse_spec(spec, limit=limit)
    items = spec.definition.load(limit=spec.limit, **spec.data_options)
    if not items:
        raise SmfError(f"task {spec.label}: no items to evaluate (empty dataset or limit)")
    return Task(spec.label, spec.definition, items, spec.options, {**spec.data_options, "limit": spec.limit})


def _check_scoring(label: str, kind: str, scoring: dict) -> None:
    """Validate scoring options and fill the qa style's defaults (in place)."""
    from smf.evaluate.mcq import FORMATS
    from smf.evaluate.qa import MATCHES, STYLES

    def bad(option: str, choices) -> SmfError:
        return SmfError(f"task {label}: {option} must be one of {', '.join(map(str, choices))}, got {scoring[option]!r}")

    if kind == "mcq" and scoring["format"] not in FORMATS:
        raise bad("format", FORMATS)
    if kind == "qa":
        if scoring["prompt"] not in STYLES:
            raise bad("prompt", STYLES)
        style = STYLES[scoring["prompt"]]
        scoring["match"] = scoring["match"] or style.match
        if scoring["match"] not in MATCHES:
            raise bad("match", MATCHES)
        stop = style.stop if scoring["stop"] is None else scoring["stop"]
        scoring["stop"] = [stop] if isinstance(stop, str) else list(stop)
    for option in ("max_new_tokens", "max_length", "max_batch_tokens"):
        if option in scoring and (not isinstance(scoring[option], int) or scoring[option] < 1):
            raise SmfError(f"task {label}: {option} must be a positive integer, got {scoring[option]!r}")
