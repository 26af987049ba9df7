"""Where training data comes from: named sources or local files.

Training examples (`smf train --data`):
  facts            the offline stand-in's training wordings (fictional medical facts)
  medmcqa          MedMCQA train split: question with choices → answer (+ explanation)
  triviaqa-facts   TriviaQA facts as statements (Lin et al.'s fact-learning setting)
  FILE             .jsonl/.json rows {"prompt", "target"} (loss on target) or {"text"};
                   .txt: one statement per non-empty line
General text (`smf background`, `smf heal`):
  pydoc            the background part of pydoc_data.topics (never the held-out part)
  wikitext         WikiText-2 raw train split (hub or `source` file)
  FILE             .txt (one document) or .jsonl/.json rows {"text"}

A source is a name or a mapping of options, e.g. {name: facts, n_facts: 60, seed: 1},
or on the command line `facts:n_facts=60,seed=1`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import yaml

from smf.data.types import TrainExample
from smf.errors import SmfError

EXAMPLE_SOURCES = ("facts", "medmcqa", "triviaqa-facts")
TEXT_SOURCES = ("pydoc", "wikitext")


def parse_spec(text: str) -> dict[str, Any]:
    """'facts:n_facts=60,seed=1' → {'name': 'facts', 'n_facts': 60, 'seed': 1}."""
    name, _, rest = text.partition(":")
    spec: dict[str, Any] = {"name": name.strip()}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise SmfError(f"data option '{part}' in '{text}' is not key=value")
        spec[key.strip()] = yaml.safe_load(value)
    return spec


def _spec(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    spec = parse_spec(spec) if isinstance(spec, str) else dict(spec)
    if "name" not in spec:
        raise SmfError(f"data source {spec} has no 'name'")
    name = str(spec.pop("name"))
    return name, spec


def _no_options(name: str, options: dict) -> None:
    if options:
        raise SmfError(f"data source '{name}' takes no options (got {', '.join(options)})")


def training_examples(spec: str | Mapping[str, Any]) -> list[TrainExample]:
    """The training examples of a source (see the module docstring)."""
    name, options = _spec(spec)
    limit = options.pop("limit", None)
    if name == "facts":
        from smf.data.facts import FactsConfig, generate_facts

        try:
            examples = generate_facts(FactsConfig(**options)).train
        except TypeError as e:
            raise SmfError(f"facts options: {e}") from None
    elif name in ("medmcqa", "triviaqa-facts"):
        examples = _hub_examples(name, limit, **options)
    elif _is_file(name):
        _no_options(name, options)
        examples = _file_examples(Path(name))
    else:
        raise SmfError(f"unknown training data '{name}'; choose {', '.join(EXAMPLE_SOURCES)} or a .jsonl/.json/.txt file")
    if not examples:
        raise SmfError(f"training data '{name}' is empty")
    return examples[:limit] if limit else examples


def _hub_examples(name: str, limit: int | None, source: str | None = None, split: str = "train", **options) -> list[TrainExample]:
    """MedMCQA (question + choices → answer, + explanation) or TriviaQA facts as statements."""
    from smf.data import hub

    if name == "medmcqa":
        rows = hub.load_rows(source, hub_path=hub.MEDMCQA_HUB, hub_name=None, split=split, limit=limit)
        convert = hub.medmcqa_train_examples
    else:
        rows = hub.load_rows(source, hub_path=hub.TRIVIAQA_HUB, hub_name=hub.TRIVIAQA_CONFIG, split=split, limit=limit)
        convert = hub.triviaqa_fact_examples
    try:
        return convert(rows, source=str(source or f"{name} {split}"), **options)
    except TypeError as e:
        raise SmfError(f"{name} options: {e}") from None


def general_texts(spec: str | Mapping[str, Any]) -> list[str]:
    """Documents of general text for background statistics and healing."""
    name, options = _spec(spec)
    if name == "pydoc":
        from smf.data.pydoc import pydoc_texts

        _no_options(name, options)
        texts = pydoc_texts("background")
    elif name == "wikitext":
        from smf.data.hub import load_wikitext

        texts = [d.scored_text for d in load_wikitext(**{"split": "train", **options})]
    elif _is_file(name):
        _no_options(name, options)
        path = Path(name)
        texts = [path.read_text(encoding="utf-8")] if path.suffix == ".txt" else [r["text"] for r in _rows(path, ("text",))]
    else:
        raise SmfError(f"unknown text data '{name}'; choose {', '.join(TEXT_SOURCES)} or a .txt/.jsonl file")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise SmfError(f"text data '{name}' is empty")
    return texts


def _is_file(name: str) -> bool:
    if Path(name).suffix in (".jsonl", ".json", ".txt"):
        if not Path(name).is_file():
            raise SmfError(f"{name}: file not found")
        return True
    return False


def _rows(path: Path, need: tuple[str, ...]) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise SmfError(f"{path}: the file is empty")
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise SmfError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        numbered = list(enumerate(rows if isinstance(rows, list) else [], 1))
        if not isinstance(rows, list):
            raise SmfError(f"{path}: expected a JSON list of objects")
    else:
        numbered = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    numbered.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise SmfError(f"{path}: line {n} is not valid JSON ({e.msg})") from None
    for n, row in numbered:
        if not isinstance(row, dict) or any(not isinstance(row.get(k), str) for k in need):
            raise SmfError(f"{path}: row {n} needs string field(s) {', '.join(need)}")
    return [row for _, row in numbered]


def _file_examples(path: Path) -> list[TrainExample]:
    if path.suffix == ".txt":
        return [TrainExample("", line.strip()) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = _rows(path, ())
    out = []
    for n, row in enumerate(rows, 1):
        if isinstance(row.get("target"), str):
            out.append(TrainExample(str(row.get("prompt", "")), row["target"]))
        elif isinstance(row.get("text"), str):
            out.append(TrainExample("", row["text"]))
        else:
            raise SmfError(f"{path}: row {n} needs a string 'target' (with an optional 'prompt') or a 'text'")
    return out
