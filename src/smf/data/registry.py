"""The registry of datasets: where each comes from and the forms it takes.

A dataset has up to three forms, each a loader with its options and their defaults:

- `train`: training examples (`smf train --data`, a study's `data`);
- `text`: documents of general text (`smf background`, `smf heal`);
- `eval`: items to score (`smf eval --tasks`, a study's task and probes), with the
  scorer kind (mcq, qa, perplexity) and its template defaults (`format` for mcq:
  the prompt templates of `smf.data.templates`; `prompt` style for qa).

Hub datasets take a `source` option: None loads them from the Hugging Face hub, a
path reads a local file in the hub dataset's schema (the `datasets` library is imported
only then). Adding a dataset or a task is one `Dataset` entry in `DATASETS`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from smf.config import closest
from smf.data import facts as _facts_module
from smf.data.capitals import capitals_items
from smf.data.docstrings import docstring_documents, docstring_texts, question_chat_texts
from smf.data.hub import (
    MEDMCQA_HUB,
    TRIVIAQA_CONFIG,
    TRIVIAQA_HUB,
    load_medmcqa,
    load_nq_open,
    CHOICE_TYPES,
    train_template,
    check_oasst1_options,
    check_seed,
    load_oasst1,
    oasst1_rows,
    load_triviaqa,
    load_wikitext,
    load_wikitext_lines,
    medmcqa_train_examples,
    triviaqa_fact_examples,
)
from smf.data.pydoc import pydoc_documents, pydoc_texts
from smf.data.types import TrainExample
from smf.data.world import world_items
from smf.errors import SmfError


@dataclass(frozen=True)
class Form:
    """One form of a dataset: `load(limit=None, **options)` and the options' defaults."""

    load: Callable[..., list]
    options: Mapping[str, Any] = field(default_factory=dict)
    kind: str | None = None  # eval forms: "mcq" | "qa" | "perplexity"
    scoring: Mapping[str, Any] = field(default_factory=dict)  # eval forms: scorer option defaults
    #: check(where, **options): refuse option values that cannot work (an unknown template, a filter that leaves
    #: nothing), at config load, before any model work; `smf.data.sources.check_source` calls it
    check: Callable[..., None] | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    about: str
    train: Form | None = None
    text: Form | None = None
    eval: Form | None = None
    origin: str = ""  # where its text comes from, shared by datasets drawn from one source; "" = its name

    def source(self) -> str:
        return self.origin or self.name

    def form(self, which: str) -> Form | None:
        return getattr(self, which)


FORMS = {"train": "training data", "text": "general text", "eval": "task"}


# ------------------------------------------------------------------ loaders


def _cut(items: list, limit: int | None) -> list:
    return items[:limit] if limit is not None else items


def _facts_config(options: dict):
    try:
        return _facts_module.FactsConfig(**options)
    except (TypeError, ValueError) as e:
        raise SmfError(f"facts options: {e}") from None


def fact_range(text: Any, n: int, where: str = "facts") -> range:
    """The facts 'a:b' (a included, b excluded, 0-based) of `n`, checked."""
    parts = str(text).split(":")
    try:
        start, stop = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (None, None)
    except ValueError:
        start = stop = None
    if start is None or not 0 <= start < stop <= n:
        raise SmfError(f"{where}: {text!r} is not a range of facts 'a:b' with 0 <= a < b <= {n} (n_facts)")
    return range(start, stop)


def _facts_train(limit=None, facts=None, **options):
    generated = _facts_module.generate_facts(_facts_config(options))
    examples = generated.train
    if facts is not None:  # each fact has train_wordings examples, in fact order
        chosen = fact_range(facts, len(generated.facts))
        per = generated.config.train_wordings
        examples = examples[chosen.start * per : chosen.stop * per]
    return _cut(examples, limit)


def _facts_eval(split: str, form: str) -> Callable[..., list]:
    def load(limit=None, facts=None, **options):
        loader = _facts_module.load_facts_mcq if form == "mcq" else _facts_module.load_facts_qa
        config = _facts_config(options)
        items = loader(split=split, config=config)
        if facts is not None:  # one item per fact, in fact order
            chosen = fact_range(facts, len(items), f"facts ({split} rows)")
            items = items[chosen.start : chosen.stop]
        return _cut(items, limit)

    return load


MEDMCQA_TRAIN = {"source": None, "split": "train", "explanation": True, "template": "lm-eval", "choice_type": None,
                 "sample": None, "seed": 0}


def _medmcqa_train(limit=None, source=None, split="train", explanation=True, template="lm-eval", choice_type=None,
                   sample=None, seed=0):
    return medmcqa_train_examples(source=source, split=split, limit=limit, explanation=explanation, template=template,
                                  choice_type=choice_type, sample=sample, seed=seed)


def _check_medmcqa_train(where, template="lm-eval", choice_type=None, sample=None, seed=0, **_):
    train_template(template, where)
    if choice_type is not None and choice_type not in CHOICE_TYPES:
        raise SmfError(f"{where}: choice_type must be single, multi or null, got {str(choice_type)[:40]!r}")
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 0):
        raise SmfError(f"{where}: sample must be an integer >= 0 (or null), got {sample!r}")
    check_seed(seed, where)


def _triviaqa_facts_train(limit=None, source=None, split="train", form="statement"):
    return triviaqa_fact_examples(source=source, split=split, limit=limit, form=form)


def _medmcqa_eval(limit=None, source=None, split="validation", choice_type=None):
    return load_medmcqa(source=source, split=split, limit=limit, choice_type=choice_type)


def _triviaqa_eval(limit=None, source=None, split="validation"):
    return load_triviaqa(source=source, split=split, limit=limit)


def _wikitext_eval(limit=None, source=None, split="test", version="wikitext-2-raw-v1"):
    return load_wikitext(source=source, split=split, version=version, limit=limit)


def _wikitext_lines_eval(limit=None, source=None, split="test", version="wikitext-103-v1"):
    return load_wikitext_lines(source=source, split=split, version=version, limit=limit)


OASST1 = {"source": None, "split": "train", "lang": None, "seed": None, "role": None, "rank": None, "min_chars": None,
          "sample": None}


def _check_oasst1(where, source=None, **options):
    """Filter values no message can have; with a local file, also filters that leave no message of it."""
    check_oasst1_options(where, **options)
    if source is not None:
        try:
            oasst1_rows(source, **{k: v for k, v in options.items() if k != "limit"})
        except SmfError as e:
            raise SmfError(f"{where}: {e}") from None


def _oasst1_text(limit=None, **options):
    return load_oasst1(limit=limit, **options)


def _oasst1_train(limit=None, **options):
    return [TrainExample(prompt="", target=text) for text in _oasst1_text(limit=limit, **options)]


def _nq_open_eval(limit=None, source=None, split="validation"):
    return load_nq_open(source=source, split=split, limit=limit)


def _wikitext_text(limit=None, source=None, split="train", version="wikitext-2-raw-v1"):
    return [d.scored_text for d in _wikitext_eval(limit=limit, source=source, split=split, version=version)]


def _pydoc_eval(limit=None, part="heldout"):
    return pydoc_documents(part=part, limit=limit)


def _pydoc_text(limit=None):
    return pydoc_texts("background", limit=limit)  # never the held-out or validation parts


def _docstrings_eval(limit=None, part="heldout"):
    return docstring_documents(part=part, limit=limit)


def _docstrings_text(limit=None):
    return docstring_texts("background", limit=limit)  # never the held-out or validation modules


def _docstring_questions_text(limit=None):
    return question_chat_texts(limit=limit)


def _capitals_eval(limit=None, n=60, offset=0):
    return _cut(capitals_items(n=n, offset=offset), limit)


def _world_eval(limit=None, half="test", per_kind=100):
    return _cut(world_items(half=half, per_kind=per_kind), limit)


# ------------------------------------------------------------------ the registry

# n_facts, seed, ...; `facts: "a:b"` keeps the facts a..b-1 (a chunk of a stream)
FACTS = {**{f.name: f.default for f in dataclasses.fields(_facts_module.FactsConfig)}, "facts": None}
HUB = {"source": None, "split": "validation"}
WIKITEXT = {"source": None, "split": "test", "version": "wikitext-2-raw-v1"}
CLOZE, LETTER, PLAIN, CHAT = {"format": "cloze"}, {"format": "letter"}, {"prompt": "plain"}, {"prompt": "chat"}

DATASETS: dict[str, Dataset] = {d.name: d for d in [
    Dataset("facts", "fictional medical facts (offline task): training wordings; held-out question wording, 4-way cloze",
            train=Form(_facts_train, FACTS), eval=Form(_facts_eval("test", "mcq"), FACTS, "mcq", CLOZE)),
    Dataset("facts-val", "fictional facts, validation wording, 4-way cloze",
            eval=Form(_facts_eval("val", "mcq"), FACTS, "mcq", CLOZE)),
    Dataset("facts-control", "unseen fictional facts (control: stays at chance), 4-way cloze",
            eval=Form(_facts_eval("control", "mcq"), FACTS, "mcq", CLOZE)),
    Dataset("facts-qa", "fictional facts as open questions, greedy answer, exact match",
            eval=Form(_facts_eval("test", "qa"), FACTS, "qa", PLAIN)),
    Dataset("medmcqa", f"MedMCQA ({MEDMCQA_HUB}): train question → ' letter. answer' (+ explanation; template: "
                       "published is the SMF-on-Qwen study's text, with choice_type: single, sample: N, seed); "
                       "validation scored in lm-eval's letter format",
            train=Form(_medmcqa_train, MEDMCQA_TRAIN, check=_check_medmcqa_train),
            eval=Form(_medmcqa_eval, {**HUB, "choice_type": None}, "mcq", LETTER)),
    Dataset("medmcqa-published", "MedMCQA validation scored as the SMF-on-Qwen study does: single-answer rows, its prompt, "
                                 "' A. option' continuations by mean log-probability per token",
            eval=Form(_medmcqa_eval, {**HUB, "choice_type": "single"}, "mcq", {"format": "published"})),
    Dataset("triviaqa", f"TriviaQA {TRIVIAQA_CONFIG} validation ({TRIVIAQA_HUB}), greedy answer, exact match",
            eval=Form(_triviaqa_eval, HUB, "qa", PLAIN)),
    Dataset("triviaqa-published", "TriviaQA scored as the SMF-on-Qwen study does: 'Question: q\\nAnswer:', 32 tokens, "
                                  "normalised alias contained in the answer",
            eval=Form(_triviaqa_eval, HUB, "qa", {"prompt": "published"})),
    Dataset("triviaqa-facts", "TriviaQA question-answer pairs as facts to learn (Lin et al.), 'statement' or 'qa' form",
            train=Form(_triviaqa_facts_train, {"source": None, "split": "train", "form": "statement"})),
    Dataset("wikitext", "WikiText-2 raw (document level): train pages as general text; test pages, rolling perplexity",
            text=Form(_wikitext_text, {**WIKITEXT, "split": "train"}), eval=Form(_wikitext_eval, WIKITEXT, "perplexity"), origin='Wikipedia (WikiText)'),
    Dataset("wikitext-103", "WikiText-103 raw test, document-level rolling perplexity",
            eval=Form(_wikitext_eval, {**WIKITEXT, "version": "wikitext-103-raw-v1"}, "perplexity"), origin='Wikipedia (WikiText)'),
    Dataset("wikitext-103-published", "WikiText-103 (Salesforce/wikitext line rows) as the SMF-on-Qwen study scores it: "
                                      "first rows joined, token perplexity, windows 1024 / stride 512",
            eval=Form(_wikitext_lines_eval, {"source": None, "split": "test", "version": "wikitext-103-v1"}, "perplexity",
                      {"max_length": 1024, "stride": 512}), origin='Wikipedia (WikiText)'),
    Dataset("nq-open", "Natural Questions open (google-research-datasets/nq_open) validation: lm-eval's prompt, token F1 "
                       "(Lin et al.'s forgetting probe)",
            eval=Form(_nq_open_eval, HUB, "qa", {"prompt": "nq"})),
    Dataset("oasst1", "OpenAssistant/oasst1 message texts (the published study's heal and background data: lang en, role "
                      "assistant, rank [0, 1], min_chars 50); as training data the whole text carries the loss",
            train=Form(_oasst1_train, OASST1, check=_check_oasst1), text=Form(_oasst1_text, OASST1, check=_check_oasst1)),
    Dataset("pydoc", "Python's pydoc_data.topics: background part as general text; held-out part, rolling perplexity",
            text=Form(_pydoc_text), eval=Form(_pydoc_eval, {"part": "heldout"}, "perplexity"), origin='pydoc_data.topics'),
    Dataset("pydoc-val", "validation part of pydoc_data.topics (for choosing settings), rolling perplexity",
            eval=Form(_pydoc_eval, {"part": "val"}, "perplexity"), origin='pydoc_data.topics'),
    Dataset("docstrings", "the standard library's docstrings (read with ast, one document per module): background "
                          "modules as general text; held-out modules, rolling perplexity",
            text=Form(_docstrings_text), eval=Form(_docstrings_eval, {"part": "heldout"}, "perplexity"), origin="the standard library's docstrings"),
    Dataset("docstring-questions", "chats of questions about the background modules' functions and classes, each "
                                   "answered by its docstring's first paragraph (smf learn's other background)",
            text=Form(_docstring_questions_text), origin="the standard library's docstrings"),
    Dataset("docstrings-val", "validation modules of the standard library's docstrings, rolling perplexity",
            eval=Form(_docstrings_eval, {"part": "val"}, "perplexity"), origin="the standard library's docstrings"),
    Dataset("capitals", "capitals of the most populous countries, asked through the chat template",
            eval=Form(_capitals_eval, {"n": 60, "offset": 0}, "qa", CHAT), origin='GeoNames'),
    Dataset("capitals-val", "capitals of the next 60 countries (for choosing settings), chat template",
            eval=Form(_capitals_eval, {"n": 60, "offset": 60}, "qa", CHAT), origin='GeoNames'),
    Dataset("capitals-plain", "capitals with lm-eval's plain TriviaQA prompt",
            eval=Form(_capitals_eval, {"n": 60, "offset": 0}, "qa", PLAIN), origin='GeoNames'),
    Dataset("world", "world knowledge from GeoNames (capitals, continents, currencies, cities' countries; 100 each), "
                     "chat template, substring match",
            eval=Form(_world_eval, {"half": "test", "per_kind": 100}, "qa", CHAT), origin='GeoNames'),
    Dataset("world-val", "the world probe's other half (alternate ranks; for choosing settings), chat template",
            eval=Form(_world_eval, {"half": "val", "per_kind": 100}, "qa", CHAT), origin='GeoNames'),
]}


def names(form: str) -> list[str]:
    """The datasets that have `form` ("train", "text" or "eval")."""
    return [n for n, d in DATASETS.items() if d.form(form) is not None]


def get_form(name: str, form: str, where: str = "") -> tuple[Dataset, Form]:
    """The dataset `name` and its `form`; SmfError naming the choices otherwise."""
    dataset = DATASETS.get(name)
    if dataset is None or dataset.form(form) is None:
        choices = names(form)
        close = closest(str(name), choices)
        hint = f" (did you mean '{close}'?)" if close else ""
        at = f"{where}: " if where else ""
        raise SmfError(f"{at}unknown {FORMS[form]} {name!r}{hint}; choose from: {', '.join(choices)}")
    return dataset, dataset.form(form)


def load(name: str, form: str = "eval", **options) -> list:
    """Items (examples, texts) of dataset `name` in `form`; keyword arguments go to its loader."""
    return get_form(name, form)[1].load(**options)


__all__ = ["DATASETS", "Dataset", "FORMS", "Form", "get_form", "load", "names"]
