"""Tasks: a dataset's evaluation form (`smf.data.registry`) with its options resolved.

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
`max_new_tokens`, `decoding` (greedy, or generation_config: the model's repetition penalty and
only the tokenizer's EOS, as the published study generates); perplexity `max_length`, `max_batch_tokens`, `stride`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from smf.config import closest
from smf.data.registry import Dataset, get_form, names
from smf.errors import SmfError
from smf.evaluate.generate import DECODINGS
from smf.evaluate.mcq import FORMATS
from smf.evaluate.qa import MATCHES, STYLES

# Scoring options of each kind and their defaults (a task's own defaults override).
# qa `match` and `stop` of None take the prompt style's (smf.evaluate.qa.STYLES).
SCORING_DEFAULTS = {
    "mcq": {"format": "letter"},
    "qa": {"prompt": "plain", "match": None, "stop": None, "max_new_tokens": 32, "decoding": "greedy"},
    # lm-eval would use the model's whole context (8192 for SmolLM2, 32768 for Qwen2.5);
    # 2048 keeps CPU runs practical. Pass the same max_length to both for parity.
    # stride: None = lm-eval's rolling windows; a number = the fixed-length sliding-window recipe
    "perplexity": {"max_length": 2048, "max_batch_tokens": 4096, "stride": None},
}


@dataclass
class Task:
    """A task ready to run: its items are loaded, its options resolved."""

    label: str
    dataset: Dataset
    items: list
    options: dict  # scoring options, defaults filled in
    data_options: dict

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def kind(self) -> str:
        return self.dataset.eval.kind


def task_names() -> list[str]:
    return names("eval")


@dataclass(frozen=True)
class TaskSpec:
    """A checked task request: which task, under which label, with which options."""

    label: str
    dataset: Dataset
    limit: int | None
    data_options: dict
    options: dict  # scoring options, defaults filled in


def resolve_task(spec: str | Mapping[str, Any] | TaskSpec, *, limit: int | None = None, where: str = "") -> TaskSpec:
    """Check a task name or option mapping without loading any data.

    `limit` applies where the spec sets none. Raises SmfError for an unknown task or
    option, or a bad option value, naming the choices.
    """
    if isinstance(spec, TaskSpec):
        return spec
    if not isinstance(spec, (str, Mapping)):
        raise SmfError(f"{where + ': ' if where else ''}a task is a name or a mapping with a 'name', got {spec!r}")
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = options.pop("name", None)
    dataset, form = get_form(name, "eval", where)
    label = str(options.pop("as", name))
    limit = options.pop("limit", limit)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise SmfError(f"task {label}: limit must be a positive integer, got {limit!r}")
    data_defaults = dict(form.options)
    scoring_names = SCORING_DEFAULTS[form.kind]
    unknown = [k for k in options if k not in data_defaults and k not in scoring_names]
    if unknown:
        allowed = ["as", "limit", *data_defaults, *scoring_names]
        close = closest(unknown[0], allowed)
        hint = f"; did you mean '{close}'?" if close else f"; options of {name}: {', '.join(allowed)}"
        raise SmfError(f"{where + ': ' if where else ''}task {label}: unknown option {unknown[0]!r}{hint}")
    scoring = {
        **SCORING_DEFAULTS[form.kind],
        **form.scoring,
        **{k: v for k, v in options.items() if k in scoring_names},
    }
    _check_scoring(label, form.kind, scoring)
    data_options = {k: options.get(k, v) for k, v in data_defaults.items()}
    return TaskSpec(label, dataset, limit, data_options, scoring)


def load_task(spec: str | Mapping[str, Any] | TaskSpec, *, limit: int | None = None) -> Task:
    """Check a task request (see `resolve_task`) and load its items."""
    spec = resolve_task(spec, limit=limit)
    items = spec.dataset.eval.load(limit=spec.limit, **spec.data_options)
    if not items:
        raise SmfError(f"task {spec.label}: no items to evaluate (empty dataset or limit)")
    return Task(spec.label, spec.dataset, items, spec.options, {**spec.data_options, "limit": spec.limit})


def _check_scoring(label: str, kind: str, scoring: dict) -> None:
    """Validate scoring options and fill the qa style's defaults (in place)."""
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
        if scoring["decoding"] not in DECODINGS:
            raise bad("decoding", DECODINGS)
        stop = style.stop if scoring["stop"] is None else scoring["stop"]
        scoring["stop"] = [stop] if isinstance(stop, str) else list(stop)
    for option in ("max_new_tokens", "max_length", "max_batch_tokens"):
        if option in scoring and (not isinstance(scoring[option], int) or scoring[option] < 1):
            raise SmfError(f"task {label}: {option} must be a positive integer, got {scoring[option]!r}")
    stride = scoring.get("stride")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= scoring["max_length"]):
        raise SmfError(f"task {label}: stride must be an integer from 1 to max_length ({scoring['max_length']}), or null, got {stride!r}")
