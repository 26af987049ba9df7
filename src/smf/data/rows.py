"""The one reader of local row files: .jsonl, .json, .parquet and .csv.

Hub datasets given as local files (`source:`), training data files (`--data FILE.jsonl`)
and text files all come through `read_rows_file`, so every bad file gets the same
one-line errors naming the file, the line and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

from smf.errors import SmfError

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


def read_rows_file(path: str | Path, *, hint: str = "the hub dataset") -> list[dict]:
    """Rows of a local .jsonl/.json/.parquet/.csv file; SmfError names the file and row."""
    path = Path(path).expanduser()
    fix = f"give a {', '.join(FILE_SUFFIXES)} file in the schema of {hint}"
    if not path.is_file():
        raise SmfError(f"{path}: no such file; {fix} (or none, to load it from the hub)")
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise SmfError(f"{path}: unsupported file type {suffix or '(none)'}; {fix}")
    if suffix in (".jsonl", ".json"):
        rows = _read_json(path, fix)
    else:
        rows = _read_arrow(path, suffix, fix)
    if not rows:
        raise SmfError(f"{path}: the file has no rows; {fix}")
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise SmfError(f"{path}: row {n} is a {type(row).__name__}, not an object with named fields; {fix}")
    return rows


def read_text(path: Path) -> str:
    """A file's text, without the byte-order mark some editors put first; SmfError if it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise SmfError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None


def lines(text: str) -> list[str]:
    """Lines split on newline only: `str.splitlines` also splits on Unicode line and paragraph
    separators and form feeds, which are characters inside one fact or one JSON string."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _read_json(path: Path, fix: str) -> list:
    text = read_text(path)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise SmfError(f"{path}: line {e.lineno}: not valid JSON ({e.msg}); {fix}") from None
        return rows
    # JSON Lines; `datasets` reads a .json file holding JSON Lines too, so we do as well.
    rows = []
    for lineno, line in enumerate(lines(text), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise SmfError(f"{path}: line {lineno}: not valid JSON ({e.msg}); {fix}") from None
    return rows


def _read_arrow(path: Path, suffix: str, fix: str) -> list[dict]:
    # pyarrow (a dependency of `datasets`) infers column types, so a CSV `cop` column
    # reads as integers, as it does through `datasets`.
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq  # optional (comes with datasets): only parquet and csv rows need it

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pacsv  # optional, as above

            # Empty cells read as None, as `datasets` (through pandas) reads them.
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    except ImportError:
        raise SmfError(f"{path}: reading {suffix} files needs pyarrow: pip install pyarrow") from None
    except Exception as e:  # pyarrow raises several types (ArrowInvalid, OSError) for bad files
        if path.stat().st_size == 0:
            return []
        raise SmfError(f"{path}: cannot read it as {suffix[1:]} ({one_line(e)}); {fix}") from None
    return table.to_pylist()


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
