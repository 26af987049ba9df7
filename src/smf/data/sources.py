"""Training data and general text, by dataset name or from a local file.

Training examples (`smf train --data`, a study's `data`): a dataset with a `train`
form (`smf.data.registry`: facts, medmcqa, triviaqa-facts), or a file:
  .jsonl/.json rows {"prompt", "target"} (loss on target) or {"text"};
  .txt one statement per non-empty line.
General text (`smf background`, `smf heal`, a study's `background.data`): a dataset
with a `text` form (pydoc, wikitext), or a file: .txt (one document) or .jsonl/.json
rows {"text"}.

A source is a name, a mapping of options ({name: facts, n_facts: 60, seed: 1}), or on
the command line "facts:n_facts=60,seed=1" (`source_from_text`). Every source takes
`limit` (the first N). `check_source` checks a source without loading it (and its option values,
where the dataset's form has a check: an unknown template, a filter that leaves nothing).

`seed: run` in a study's data, heal.data or background.data stands for each run's seed: the
study draws that data anew per seed (`for_seed` puts the seed in); in `smf train --data` it is
the run's --seed, in `smf heal --data` the heal's seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from smf.config import suggest
from smf.data.registry import get_form
from smf.data.rows import lines, read_rows_file, read_text
from smf.data.types import TrainExample
from smf.errors import SmfError
from smf.io import parse_yaml

DATA_FILES = (".jsonl", ".json", ".txt")  # local training data and general text


def source_from_text(text: str) -> dict[str, Any]:
    """'facts:n_facts=60,seed=1' → {'name': 'facts', 'n_facts': 60, 'seed': 1}; an existing file is its own name
    (a path may hold a ':')."""
    if Path(text).expanduser().is_file():
        return {"name": text}
    name, _, rest = text.partition(":")
    spec: dict[str, Any] = {"name": name.strip()}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise SmfError(f"data option '{part}' in '{text}' is not key=value")
        spec[key.strip()] = parse_yaml(value, f"data option '{part[:80]}' in '{text[:120]}' (quote or fix the value)")
    return spec


def _split(spec: str | Mapping[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    spec = source_from_text(spec) if isinstance(spec, str) else spec
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise SmfError(f"{where}: a data source is a name or a mapping with a 'name', got {spec!r}")
    options = dict(spec)
    return str(options.pop("name")), options


def _is_file(name: str) -> bool:
    return Path(name).suffix.lower() in DATA_FILES


def check_source(spec: str | Mapping[str, Any], form: str, where: str = "data") -> None:
    """Check a source's name and options (and that a file exists) without loading it."""
    name, options = _split(spec, where)
    limit = options.pop("limit", None)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise SmfError(f"{where}: limit must be a positive integer, got {limit!r}")
    if _is_file(name):
        if options:
            raise SmfError(f"{where}: a data file takes no options but limit (got {', '.join(options)})")
        if not Path(name).is_file():
            raise SmfError(f"{name}: file not found")
        return
    dataset, f = get_form(name, form, where)
    unknown = [k for k in options if k not in f.options]
    if unknown:
        raise SmfError(f"{where}: {name} has no option '{unknown[0]}'{suggest(unknown[0], ['limit', *f.options])}")
    if f.check is not None:
        f.check(where, **{**f.options, **for_seed(options, 0)})


RUN_SEED = "run"  # a data option `seed: run`: each run's own seed (`for_seed`)


def for_seed(spec: Any, seed: int) -> Any:
    """`spec` with `seed: run` replaced by `seed` (the study's run seed); any other spec as it is."""
    if isinstance(spec, Mapping) and spec.get("seed") == RUN_SEED:
        return {**spec, "seed": seed}
    if isinstance(spec, str) and not _is_file(spec) and ":" in spec:
        return for_seed(source_from_text(spec), seed)
    return spec


def per_seed(spec: Any) -> bool:
    """Whether the source is drawn anew for each run seed (`seed: run`)."""
    return for_seed(spec, 0) != spec and for_seed(spec, 0) != for_seed(spec, 1)


def training_examples(spec: str | Mapping[str, Any], where: str = "training data") -> list[TrainExample]:
    """The training examples of a source (see the module docstring)."""
    check_source(spec, "train", where)
    name, options = _split(spec, where)
    is_file = _is_file(name)
    examples = _file_examples(Path(name)) if is_file else get_form(name, "train")[1].load(**options)
    if not examples:
        raise SmfError(f"training data '{name}' is empty")
    limit = options.get("limit")
    return examples[:limit] if limit and is_file else examples


def general_texts(spec: str | Mapping[str, Any], where: str = "text data") -> list[str]:
    """Documents of general text for background statistics and healing."""
    check_source(spec, "text", where)
    name, options = _split(spec, where)
    if _is_file(name):
        path = Path(name)
        texts = [read_text(path)] if path.suffix.lower() == ".txt" else [r["text"] for r in _rows(path, "text")]
        texts = texts[: options["limit"]] if options.get("limit") else texts
    else:
        texts = get_form(name, "text")[1].load(**options)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise SmfError(f"text data '{name}' is empty")
    return texts


def _rows(path: Path, field: str | None) -> list[dict]:
    """Rows of a .jsonl/.json file; with `field`, each must hold it as text."""
    rows = read_rows_file(path, hint="smf's data files (rows with 'prompt'/'target' or 'text')")
    if field is not None:
        for n, row in enumerate(rows, 1):
            if not isinstance(row.get(field), str):
                raise SmfError(f"{path}: row {n} needs a string '{field}'")
    return rows


def _file_examples(path: Path) -> list[TrainExample]:
    if path.suffix.lower() == ".txt":
        return [TrainExample("", line.strip()) for line in lines(read_text(path)) if line.strip()]
    out = []
    for n, row in enumerate(_rows(path, None), 1):
        if isinstance(row.get("target"), str):
            out.append(TrainExample(str(row.get("prompt", "")), row["target"]))
        elif isinstance(row.get("text"), str):
            out.append(TrainExample("", row["text"]))
        else:
            raise SmfError(f"{path}: row {n} needs a string 'target' (with an optional 'prompt') or a 'text'")
    return out
