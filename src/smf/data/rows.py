"""The one reader of local row files: .jsonl, .json, .parquet and .csv.

Hub datasets given as local files (`source:`), training data files (`--data FILE.jsonl`)
and text files all come through `read_rows_file`, so every bad file gets the same
one-line errors naming the file, the line and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

from smf.errors import SmfError
from smf.io import MAX_DATA_BYTES, read_lines, read_text_bounded, size_text

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
    if path.stat().st_size > MAX_DATA_BYTES:  # before any read (the readers check again as they read)
        raise SmfError(f"{path}: over {size_text(MAX_DATA_BYTES)}, more than a data file holds; {_SMALLER}")
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
    """A file's text, without the byte-order mark some editors put first; SmfError if it is not UTF-8 or holds
    more than a data file may (MAX_DATA_BYTES)."""
    return read_text_bounded(path, MAX_DATA_BYTES, "data file", _SMALLER, "save the file as UTF-8")


_SMALLER = "split it into smaller files, or give fewer rows"


def lines(text: str) -> list[str]:
    """Lines split on newline only: `str.splitlines` also splits on Unicode line and paragraph
    separators and form feeds, which are characters inside one fact or one JSON string."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _read_json(path: Path, fix: str) -> list:
    if path.suffix.lower() == ".json" and _first_byte(path) == b"[":  # one JSON array: bounded as a whole
        return _loads(read_text(path), path, 0, fix)
    # JSON Lines (`datasets` reads a .json file holding JSON Lines too, so we do as well): read a line at a
    # time, each bounded (MAX_LINE_BYTES) as well as the whole.
    rows = []
    for lineno, line in read_lines(path, what="data file", fix=_SMALLER, utf8_fix="save the file as UTF-8"):
        if line.strip():
            rows.append(_loads(line, path, lineno, fix))
    return rows


def _first_byte(path: Path) -> bytes:
    """The first byte of `path` that is not white space (nor a byte-order mark); b"" for none."""
    with open(path, "rb") as f:
        head = f.read(1 << 16).removeprefix(b"\xef\xbb\xbf")
        while head:
            if rest := head.lstrip():
                return rest[:1]
            head = f.read(1 << 16)
    return b""


def _loads(text: str, path: Path, lineno: int, fix: str):
    """JSON text of `path` (a line of it, or all of it for `lineno` 0); its failures as one line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SmfError(f"{path}: line {lineno or e.lineno}: not valid JSON ({e.msg}); {fix}") from None
    except RecursionError:
        raise SmfError(f"{path}: line {lineno or 1}: not valid JSON (nested too deeply); {fix}") from None
    except ValueError as e:  # an integer past Python's digit limit
        raise SmfError(f"{path}: line {lineno or 1}: not valid JSON ({str(e).splitlines()[0][:100]}); {fix}") from None


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
