"""Hub tasks: MedMCQA, TriviaQA and WikiText, from the hub or from local files.

Each task is loaded in two steps: `load_rows` returns the raw rows (dicts in the hub
dataset's own schema), and a parser (`medmcqa_items`, `triviaqa_items`,
`wikitext_documents`) checks them and turns them into `smf.data.types` items. The
offline stand-ins (`facts`, `capitals`) write rows in the same schemas and go through
the same parsers, so evaluation never sees where the data came from.

Rows come from the Hugging Face hub by name (`datasets.load_dataset`) when no source
is given, or from a local file in the same schema: `.jsonl` (one row per line),
`.json` (an array of rows, or JSON Lines), `.parquet` or `.csv` (flat schemas only).

Conventions follow lm-evaluation-harness (tasks `medmcqa`, `triviaqa`, `wikitext`):

- MedMCQA: `cop` is the 0-based index of the correct option (0 = `opa`).
- TriviaQA (`rc.nocontext`): any of `answer.aliases` counts; lm-eval's prompt appends
  "?" to the question itself.
- WikiText (document level): words and bytes are counted on the raw `page`, the model
  reads the page after lm-eval's detokenizer (`wikitext_detokenize`).
"""

from __future__ import annotations

import numbers
import os
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smf.data.rows import one_line, read_rows_file
from smf.config import closest
from smf.data.templates import TRAIN_TEMPLATES, plain_prompt
from smf.data.types import Document, MCQItem, QAItem, TrainExample
from smf.errors import SmfError, hub_unreachable

MEDMCQA_HUB = "openlifescienceai/medmcqa"
TRIVIAQA_HUB = "mandarjoshi/trivia_qa"
TRIVIAQA_CONFIG = "rc.nocontext"
WIKITEXT_HUB = "EleutherAI/wikitext_document_level"
WIKITEXT_VERSIONS = ("wikitext-2-raw-v1", "wikitext-103-raw-v1")
OASST1_HUB = "OpenAssistant/oasst1"
NQ_OPEN_HUB = "google-research-datasets/nq_open"
WIKITEXT_LINES_HUB = "Salesforce/wikitext"  # line rows {"text"}, as the SMF-on-Qwen study reads them
WIKITEXT_LINE_VERSIONS = ("wikitext-103-v1", "wikitext-103-raw-v1", "wikitext-2-v1", "wikitext-2-raw-v1")

_MEDMCQA_OPTIONS = ("opa", "opb", "opc", "opd")


# --------------------------------------------------------------------------- rows


def load_rows(
    source: str | Path | None,
    *,
    hub_path: str,
    hub_name: str | None,
    split: str,
    limit: int | None = None,
) -> list[dict]:
    """Raw rows of a dataset: from the hub when `source` is None, else from a local file.

    `limit` keeps the first `limit` rows. Every problem a user can cause (a missing,
    empty or unreadable file, an unreachable hub) raises SmfError with one line.
    """
    _check_limit(limit)
    if source is None:
        return _hub_rows(hub_path, hub_name, split, limit)
    rows = read_rows_file(source, hint=_hub_label(hub_path, hub_name, split))
    return rows if limit is None else rows[:limit]


def _offline() -> bool:
    return any(os.environ.get(v, "0") not in ("", "0", "false", "False") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise SmfError(f"limit must be a non-negative integer, got {limit!r}")


def _hub_label(hub_path: str, hub_name: str | None, split: str) -> str:
    return f"{hub_path}" + (f" ({hub_name})" if hub_name else "") + f" [{split}]"


def _hub_rows(hub_path: str, hub_name: str | None, split: str, limit: int | None) -> list[dict]:
    label = _hub_label(hub_path, hub_name, split)
    try:
        import datasets  # optional and heavy: only a hub dataset needs it
    except ImportError:
        raise SmfError(f"loading {label} from the hub needs the datasets package: pip install datasets") from None
    split_spec = split if limit is None else f"{split}[:{limit}]"
    try:
        dataset = datasets.load_dataset(hub_path, hub_name, split=split_spec)
    except Exception as e:
        # `datasets` signals "cannot get it" with many exception types (offline mode,
        # connection errors, unknown names or splits); to the user they mean one thing.
        if hub_unreachable(e) and not _offline():
            raise SmfError(f"cannot load {label}: the hub cannot be reached (no connection) and it is not in the local cache; "
                           "give a local file in the same schema, or download it once where the hub is reachable (later "
                           "runs may set HF_DATASETS_OFFLINE=1 and read the cache)") from None
        raise SmfError(
            f"cannot load {label} from the Hugging Face hub ({one_line(e)}); "
            "connect to the network with HF_HUB_OFFLINE and HF_DATASETS_OFFLINE unset, "
            "or give a local file in the same schema"
        ) from None
    return [dict(row) for row in dataset]


# ------------------------------------------------------------------ row checking


def _require(row: Mapping, fields: Sequence[str], source: str, n: int) -> None:
    missing = [f for f in fields if f not in row]
    if missing:
        raise SmfError(f"{source}: row {n}: missing field {', '.join(map(repr, missing))}; each row needs {', '.join(fields)}")


def _text(row: Mapping, field: str, source: str, n: int) -> str:
    value = row[field]
    if not isinstance(value, str):
        raise SmfError(f"{source}: row {n}: field {field!r} must be text, got {type(value).__name__} {value!r}")
    return value


def _row_id(row: Mapping, field: str, n: int) -> str:
    value = row.get(field)
    return str(n - 1) if value is None or value == "" else str(value)


# ----------------------------------------------------------------------- MedMCQA


def medmcqa_items(rows: Sequence[Mapping], source: str) -> list[MCQItem]:
    """MCQItems from MedMCQA-schema rows (question, opa..opd, cop 0-based; id optional).

    `source` names where the rows came from (a file, "facts"), for error messages.
    """
    return [_medmcqa_item(row, source, n) for n, row in enumerate(rows, 1)]


def _medmcqa_item(row: Mapping, source: str, n: int) -> MCQItem:
    _require(row, ("question", *_MEDMCQA_OPTIONS, "cop"), source, n)
    cop = row["cop"]
    if isinstance(cop, bool) or not isinstance(cop, numbers.Integral) or not 0 <= cop <= 3:
        hint = " (the MedMCQA test split has no answers, cop = -1: use validation)" if cop == -1 else ""
        raise SmfError(f"{source}: row {n}: cop must be an integer 0..3 (0-based, 0 = opa), got {cop!r}{hint}")
    return MCQItem(
        id=_row_id(row, "id", n),
        question=_text(row, "question", source, n),
        choices=tuple(_text(row, f, source, n) for f in _MEDMCQA_OPTIONS),
        answer=int(cop),
    )


def sample_rows(rows: Sequence, n: int | None, seed: int) -> list:
    """The SMF-on-Qwen study's per-seed sample of `n` rows: all of them in file order when `n` is None, <= 0 or
    at least their number (the seed is then ignored); else the rows `numpy.random.default_rng(seed).permutation`
    puts first, in that order (what `datasets.Dataset.shuffle(seed).select(range(n))` draws)."""
    rows = list(rows)
    if n is None or n <= 0 or n >= len(rows):
        return rows
    import numpy as np  # a dependency of torch; only a sample needs it

    return [rows[int(i)] for i in np.random.default_rng(seed).permutation(len(rows))[:n]]


def check_seed(seed: Any, where: str) -> None:
    """A data seed is an integer >= 0; "run" (the run's seed) only where a study puts the seed in (`for_seed`)."""
    if seed == "run":
        raise SmfError(f"{where}: seed: run stands for each run's seed, which a study's data, heal.data and "
                       "background.data, smf train's --data and smf heal's --data have; give an integer seed here")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SmfError(f"{where}: seed must be an integer >= 0 (or run, in a study), got {seed!r}")


def _medmcqa_choice_type(rows: Sequence[Mapping], choice_type: str | None, label: str) -> list:
    if choice_type is None:
        return list(rows)
    if choice_type not in CHOICE_TYPES:
        raise SmfError(f"medmcqa: choice_type must be single, multi or null, got {choice_type!r}")
    for n, row in enumerate(rows, 1):
        if not isinstance(row, MCQItem):
            _require(row, ("choice_type",), label, n)
    return [row for row in rows if not isinstance(row, MCQItem) and row["choice_type"] == choice_type]


def medmcqa_train_examples(
    data: Sequence[MCQItem | Mapping] | None = None,
    *,
    source: str | Path | None = None,
    split: str = "train",
    limit: int | None = None,
    explanation: bool = True,
    template: str = "lm-eval",
    choice_type: str | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> list[TrainExample]:
    """Training examples from MedMCQA rows (or MCQItems).

    data: rows or items; None loads `split` from `source` (a local file; None = the
    hub). `source` also names the rows in error messages.
    Rows, in this order: `choice_type` ("single" or "multi") keeps the rows of that type;
    `sample` draws the study's per-seed sample with `seed` (`sample_rows`); `limit` keeps
    the first rows of what is left.
    template (`smf.data.templates.TRAIN_TEMPLATES`): "lm-eval", lm-eval's MedMCQA prompt
    (`letter_prompt`, ending in "Answer:") with the target " {letter}. {correct option}", so
    the first target token is the letter lm-eval scores; "published", the SMF-on-Qwen study's
    training text ("Medical exam question:" ... "Answer: B. option"), all of it the target.
    Either way, for rows whose `exp` is non-empty and `explanation` is True, then
    "\nExplanation: {exp stripped}". MCQItems carry no explanation.
    """
    _check_limit(limit)
    check_seed(seed, "medmcqa")
    make = train_template(template)
    label = str(source) if source is not None else "rows"
    if data is None:
        whole = choice_type is not None or sample is not None  # filter and draw from every row
        data = load_rows(source, hub_path=MEDMCQA_HUB, hub_name=None, split=split, limit=None if whole else limit)
        label = str(source) if source is not None else _hub_label(MEDMCQA_HUB, None, split)
    data = sample_rows(_medmcqa_choice_type(data, choice_type, label), sample, seed)
    examples = []
    for n, entry in enumerate(data[:limit] if limit is not None else data, 1):
        item = entry if isinstance(entry, MCQItem) else _medmcqa_item(entry, label, n)
        exp = None if isinstance(entry, MCQItem) or not explanation else entry.get("exp")
        examples.append(make(item, exp if isinstance(exp, str) else None))
    return examples


CHOICE_TYPES = ("single", "multi")


def train_template(name: Any, where: str = "medmcqa") -> Any:
    if name not in TRAIN_TEMPLATES:
        close = closest(str(name), TRAIN_TEMPLATES)
        hint = f" (did you mean '{close}'?)" if close else ""
        raise SmfError(f"{where}: unknown template {str(name)[:80]!r}{hint}; choose one of {', '.join(TRAIN_TEMPLATES)}")
    return TRAIN_TEMPLATES[name]


def load_medmcqa(
    source: str | Path | None = None, split: str = "validation", limit: int | None = None, choice_type: str | None = None,
) -> list[MCQItem]:
    """MedMCQA items: `openlifescienceai/medmcqa` from the hub, or a local file.

    `choice_type` ("single" or "multi") keeps only the rows of that type, before `limit`
    takes the first ones (the SMF-on-Qwen study evaluates single-answer rows only).
    """
    label = str(source) if source is not None else _hub_label(MEDMCQA_HUB, None, split)
    if choice_type is None:
        return medmcqa_items(load_rows(source, hub_path=MEDMCQA_HUB, hub_name=None, split=split, limit=limit), label)
    if choice_type not in ("single", "multi"):
        raise SmfError(f"medmcqa: choice_type must be single, multi or null, got {choice_type!r}")
    _check_limit(limit)
    rows = load_rows(source, hub_path=MEDMCQA_HUB, hub_name=None, split=split)
    for n, row in enumerate(rows, 1):
        _require(row, ("choice_type",), label, n)
    kept = [row for row in rows if row["choice_type"] == choice_type]
    return medmcqa_items(kept[:limit] if limit is not None else kept, label)


# ---------------------------------------------------------------------- TriviaQA


def triviaqa_items(rows: Sequence[Mapping], source: str) -> list[QAItem]:
    """QAItems from TriviaQA rc.nocontext rows (question, question_id, answer{aliases, value}).

    aliases: `answer.aliases`, the references lm-eval scores against, with
    `answer.value` moved first when it is one of them (so `aliases[0]` is the canonical
    answer); duplicates and empty strings dropped. `answer.value` counts on its own only
    when a row has no aliases. question_id is optional.
    """
    return [_triviaqa_item(row, source, n) for n, row in enumerate(rows, 1)]


def _triviaqa_item(row: Mapping, source: str, n: int) -> QAItem:
    _require(row, ("question", "answer"), source, n)
    answer = row["answer"]
    if not isinstance(answer, Mapping):
        raise SmfError(f"{source}: row {n}: field 'answer' must be an object with aliases and value, got {type(answer).__name__}")
    missing = [f for f in ("aliases", "value") if f not in answer]
    if missing:
        raise SmfError(f"{source}: row {n}: missing field {', '.join('answer.' + f for f in missing)}")
    aliases = answer["aliases"]
    if isinstance(aliases, str) or not isinstance(aliases, Sequence) or not all(isinstance(a, str) for a in aliases):
        raise SmfError(f"{source}: row {n}: answer.aliases must be a list of strings, got {aliases!r}")
    value = answer["value"]
    if not isinstance(value, str):
        raise SmfError(f"{source}: row {n}: answer.value must be text, got {type(value).__name__} {value!r}")
    references = [value, *aliases] if value in aliases or not aliases else list(aliases)
    unique = list(dict.fromkeys(a for a in references if a.strip()))
    if not unique:
        raise SmfError(f"{source}: row {n}: the answer has no non-empty value or alias")
    return QAItem(id=_row_id(row, "question_id", n), question=_text(row, "question", source, n), aliases=tuple(unique))


def triviaqa_fact_examples(
    data: Sequence[QAItem | Mapping] | None = None,
    *,
    source: str | Path | None = None,
    split: str = "train",
    limit: int | None = None,
    form: str = "statement",
) -> list[TrainExample]:
    """TriviaQA question-answer pairs as facts to learn (Lin et al.'s fact-learning setting).

    data: rows or items; None loads `split` of rc.nocontext from `source` (a local
    file; None = the hub). `limit` keeps the first rows. The answer is `answer.value`
    (an item's `aliases[0]`).
    form="statement": one plain sentence, loss on all of it:
        TrainExample(prompt="", target="{question}? {answer}.")
        (the question's own trailing "?" is dropped first, so it reads "Q? A.").
    form="qa": lm-eval's prompt with the loss on the answer only:
        TrainExample(prompt="Question: {question}?\\nAnswer:", target=" {answer}").
    """
    if form not in ("statement", "qa"):
        raise SmfError(f"unknown TriviaQA training form {form!r}; use 'statement' or 'qa'")
    _check_limit(limit)
    label = str(source) if source is not None else "rows"
    if data is None:
        data = load_rows(source, hub_path=TRIVIAQA_HUB, hub_name=TRIVIAQA_CONFIG, split=split, limit=limit)
        label = str(source) if source is not None else _hub_label(TRIVIAQA_HUB, TRIVIAQA_CONFIG, split)
    examples = []
    for n, entry in enumerate(data[:limit] if limit is not None else data, 1):
        item = entry if isinstance(entry, QAItem) else _triviaqa_item(entry, label, n)
        answer = item.aliases[0]
        if form == "qa":
            examples.append(TrainExample(prompt=plain_prompt(item.question), target=f" {answer}"))
        else:
            question = item.question.strip().rstrip("?").rstrip()
            end = "" if answer.endswith((".", "!", "?")) else "."
            examples.append(TrainExample(prompt="", target=f"{question}? {answer}{end}"))
    return examples


def load_triviaqa(source: str | Path | None = None, split: str = "validation", limit: int | None = None) -> list[QAItem]:
    """TriviaQA items: `mandarjoshi/trivia_qa` (rc.nocontext) from the hub, or a local file."""
    rows = load_rows(source, hub_path=TRIVIAQA_HUB, hub_name=TRIVIAQA_CONFIG, split=split, limit=limit)
    return triviaqa_items(rows, str(source) if source is not None else _hub_label(TRIVIAQA_HUB, TRIVIAQA_CONFIG, split))


# ---------------------------------------------------------------------- WikiText

# lm-eval's WikiText detokenizer, rule for rule and in its order (each rule sees the
# output of the ones before it). Literal rules are (old, new) string pairs; pattern
# rules are (compiled regex, replacement).
_DETOKENIZE_RULES: tuple[tuple[Any, str], ...] = (
    ("s '", "s'"),
    # lm-eval's rule as written: the slashes are literal characters in the pattern,
    # so it only rewrites the text "/' <digit>/". Kept so our pages match its pages.
    (re.compile(r"/' [0-9]/"), "/'[0-9]/"),
    (" @-@ ", "-"),
    (" @,@ ", ","),
    (" @.@ ", "."),
    (" : ", ": "),
    (" ; ", "; "),
    (" . ", ". "),
    (" ! ", "! "),
    (" ? ", "? "),
    (" , ", ", "),
    (re.compile(r"\(\s*([^\)]*?)\s*\)"), r"(\1)"),
    (re.compile(r"\[\s*([^\]]*?)\s*\]"), r"[\1]"),
    (re.compile(r"{\s*([^}]*?)\s*}"), r"{\1}"),
    (re.compile(r"\"\s*([^\"]*?)\s*\""), r'"\1"'),
    (re.compile(r"'\s*([^']*?)\s*'"), r"'\1'"),
    ("= = = =", "===="),
    ("= = =", "==="),
    ("= =", "=="),
    (" \N{DEGREE SIGN} ", "\N{DEGREE SIGN}"),
    (" \n", "\n"),
    ("\n ", "\n"),
    (" N ", " 1 "),
    (" 's", "'s"),
)


def wikitext_detokenize(page: str) -> str:
    """Undo WikiText's tokenization (" @-@ ", " , ", "( x )"...) as lm-eval does."""
    for old, new in _DETOKENIZE_RULES:
        page = old.sub(new, page) if isinstance(old, re.Pattern) else page.replace(old, new)
    return page


def wikitext_documents(rows: Sequence[Mapping], source: str) -> list[Document]:
    """Documents from EleutherAI/wikitext_document_level rows (one field, `page`).

    text = the raw page (words and bytes are counted on it), scored = the
    detokenized page. Whitespace-only pages are skipped: they hold no words to score
    (lm-eval keeps every page, and the hub splits have no empty ones). The id is the
    row's 0-based index, so skipped pages leave gaps rather than shifting ids.
    """
    documents = []
    for n, row in enumerate(rows, 1):
        _require(row, ("page",), source, n)
        page = _text(row, "page", source, n)
        if page.strip():
            documents.append(Document(id=str(n - 1), text=page, scored=wikitext_detokenize(page)))
    if not documents:
        raise SmfError(f"{source}: every page is empty; give a file whose rows have non-empty 'page' text")
    return documents


def load_wikitext(
    source: str | Path | None = None,
    version: str = "wikitext-2-raw-v1",
    split: str = "test",
    limit: int | None = None,
) -> list[Document]:
    """WikiText documents: `EleutherAI/wikitext_document_level` from the hub, or a local file."""
    if version not in WIKITEXT_VERSIONS:
        raise SmfError(f"unknown WikiText version {version!r}; use one of {', '.join(WIKITEXT_VERSIONS)}")
    rows = load_rows(source, hub_path=WIKITEXT_HUB, hub_name=version, split=split, limit=limit)
    return wikitext_documents(rows, str(source) if source is not None else _hub_label(WIKITEXT_HUB, version, split))


def wikitext_joined(rows: Sequence[Mapping], source: str, limit: int | None = None) -> list[Document]:
    """WikiText line rows ({"text"}) as the SMF-on-Qwen study reads them: every row
    stripped, empty rows dropped, the first `limit` rows joined by blank lines, as one
    document (no detokenization)."""
    _check_limit(limit)
    lines = []
    for n, row in enumerate(rows, 1):
        _require(row, ("text",), source, n)
        line = _text(row, "text", source, n).strip()
        if line:
            lines.append(line)
    lines = lines[:limit] if limit is not None else lines
    if not lines:
        raise SmfError(f"{source}: every row is empty; give a file whose rows have non-empty 'text'")
    text = "\n\n".join(lines)
    return [Document(id=f"first {len(lines)} rows", text=text)]


def load_wikitext_lines(
    source: str | Path | None = None, version: str = "wikitext-103-v1", split: str = "test", limit: int | None = None,
) -> list[Document]:
    """WikiText line rows from `Salesforce/wikitext` (or a local file), joined (`wikitext_joined`)."""
    if version not in WIKITEXT_LINE_VERSIONS:
        raise SmfError(f"unknown WikiText version {version!r}; use one of {', '.join(WIKITEXT_LINE_VERSIONS)}")
    rows = load_rows(source, hub_path=WIKITEXT_LINES_HUB, hub_name=version, split=split)
    return wikitext_joined(rows, str(source) if source is not None else _hub_label(WIKITEXT_LINES_HUB, version, split), limit)


# ------------------------------------------------------------------------ OASST1


OASST1_ROLES = ("prompter", "assistant")


def check_oasst1_options(where: str, *, lang: Any = None, role: Any = None, rank: Any = None, min_chars: Any = None,
                         sample: Any = None, seed: Any = None, **_: Any) -> None:
    """Refuse OASST1 filter values that no message can have (one line naming the fix)."""
    if lang is not None and (not isinstance(lang, str) or not lang.strip()):
        raise SmfError(f"{where}: lang must be a language code such as en (or null for every language), got {lang!r}")
    if role is not None and role not in OASST1_ROLES:
        close = closest(str(role), OASST1_ROLES)
        hint = f" (did you mean '{close}'?)" if close else ""
        raise SmfError(f"{where}: role {str(role)[:40]!r} is no OASST1 role{hint}; choose prompter or assistant (or null for both)")
    ranks = rank if isinstance(rank, list) else [rank] if rank is not None else []
    if (isinstance(rank, list) and not rank) or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in ranks):
        raise SmfError(f"{where}: rank must be a rank >= 0 or a list of them (the study keeps [0, 1]; null keeps every "
                       f"message), got {rank!r}")
    for name, value in (("min_chars", min_chars), ("sample", sample)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise SmfError(f"{where}: {name} must be an integer >= 0 (or null), got {value!r}")
    if seed is not None:
        check_seed(seed, where)


def oasst1_rows(
    source: str | Path | None = None, split: str = "train", limit: int | None = None, lang: str | None = None,
    seed: int | None = None, role: str | None = None, rank: int | list[int] | None = None, min_chars: int | None = None,
    sample: int | None = None,
) -> list[dict]:
    """The OpenAssistant/oasst1 rows (one row per message) that the filters keep, in the order they are used.

    Filters: `lang` (e.g. "en"), `role` ("prompter" or "assistant"), `rank` (a rank or a list of them: a message
    without a rank is kept only when rank is null) and `min_chars` (the length of the raw text in code points,
    spaces included); nothing else is consulted (deleted, synthetic and review fields neither). Then `sample`
    draws the SMF-on-Qwen study's per-seed sample with `seed` (`sample_rows`: at least as many as are left
    keeps them all in file order); without `sample`, `seed` shuffles the rows (None keeps their order). Then
    `limit` keeps the first. Whitespace-only texts are left out. A filter that leaves no message is refused.
    """
    _check_limit(limit)
    label = str(source) if source is not None else _hub_label(OASST1_HUB, None, split)
    check_oasst1_options(label, lang=lang, role=role, rank=rank, min_chars=min_chars, sample=sample, seed=seed)
    rows = load_rows(source, hub_path=OASST1_HUB, hub_name=None, split=split)
    for n, row in enumerate(rows, 1):
        _require(row, ("message_id", "role", "text"), label, n)
        _text(row, "text", label, n)
    ranks = None if rank is None else set(rank if isinstance(rank, list) else [rank])
    kept = [row for row in rows
            if (lang is None or row.get("lang") == lang) and (role is None or row["role"] == role)
            and (ranks is None or (row.get("rank") in ranks and row.get("rank") is not None))
            and (min_chars is None or len(row["text"]) >= min_chars)]
    if sample is not None:
        kept = sample_rows(kept, sample, 0 if seed is None else seed)
    elif seed is not None:
        random.Random(seed).shuffle(kept)
    kept = [row for row in kept if row["text"].strip()]
    kept = kept[:limit] if limit is not None else kept
    if not kept:
        chosen = ", ".join(f"{k}={v!r}" for k, v in (("lang", lang), ("role", role), ("rank", rank), ("min_chars", min_chars))
                           if v is not None) or "none"
        raise SmfError(f"{label}: no OASST1 message of {len(rows)} is left by the filters ({chosen}); loosen them, or check "
                       "the file")
    return kept


def load_oasst1(
    source: str | Path | None = None, split: str = "train", limit: int | None = None, lang: str | None = None,
    seed: int | None = None, role: str | None = None, rank: int | list[int] | None = None, min_chars: int | None = None,
    sample: int | None = None,
) -> list[str]:
    """Message texts of OpenAssistant/oasst1 (one row per message: message_id, role, text, lang, ...): the
    `text` of `oasst1_rows`, filtered, sampled or shuffled, and cut as it says.

    The published study heals on, and counts its background over, English assistant messages of rank 0 or
    1 and at least 50 characters: lang: en, role: assistant, rank: [0, 1], min_chars: 50, sample: N.
    """
    return [row["text"] for row in oasst1_rows(source, split, limit, lang, seed, role, rank, min_chars, sample)]


# ----------------------------------------------------------------------- NQ-open


def load_nq_open(source: str | Path | None = None, split: str = "validation", limit: int | None = None) -> list[QAItem]:
    """Natural Questions open (question, answer: a list of strings): hub or a local file."""
    label = str(source) if source is not None else _hub_label(NQ_OPEN_HUB, None, split)
    items = []
    for n, row in enumerate(load_rows(source, hub_path=NQ_OPEN_HUB, hub_name=None, split=split, limit=limit), 1):
        _require(row, ("question", "answer"), label, n)
        answers = row["answer"]
        if isinstance(answers, str) or not isinstance(answers, Sequence) or not all(isinstance(a, str) for a in answers):
            raise SmfError(f"{label}: row {n}: field 'answer' must be a list of strings, got {answers!r}")
        aliases = tuple(dict.fromkeys(a for a in answers if a.strip()))
        if not aliases:
            raise SmfError(f"{label}: row {n}: no non-empty answer")
        items.append(QAItem(id=_row_id(row, "id", n), question=_text(row, "question", label, n), aliases=aliases))
    return items
