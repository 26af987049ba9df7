"""Atomic writes: a result file or an output folder appears whole or not at all. Bounded reads:
a settings or metadata file someone hands smf is refused, in one line, when it is too large or
would expand to more than it holds (YAML aliases), before it is built."""

from __future__ import annotations

import contextlib
import json
import os
import reprlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml
from safetensors import SafetensorError

from smf.errors import SmfError

MAX_SETTINGS_BYTES = 4_000_000  # a config, a tasks file, a data option: hand-written, kilobytes
MAX_JSON_BYTES = 64_000_000  # what smf writes beside a model or a study (results grow with runs)
MAX_RECORD_BYTES = 16_000_000  # smf's own small records: a run's config, fingerprint and checkpoint note, study.json
MAX_DATA_BYTES = 2_000_000_000  # a data file someone gives (training rows, facts, text): large, never unbounded
MAX_LINE_BYTES = 64_000_000  # one line of a JSON Lines file: a row of data, a log record
MAX_LOG_BYTES = 1_000_000_000  # a training run's log: a record per step and evaluation
MAX_ALIASES = 100  # a config repeats a block a few times; a bomb needs many aliases of aliases
MAX_EXPANDED = 100_000  # values of a YAML file with its aliases expanded: configs hold hundreds

_EXCERPT = reprlib.Repr()
_EXCERPT.maxstring, _EXCERPT.maxother, _EXCERPT.maxlist, _EXCERPT.maxtuple = 60, 60, 6, 6
_EXCERPT.maxdict, _EXCERPT.maxset, _EXCERPT.maxlevel, _EXCERPT.maxlong = 6, 6, 3, 40


def excerpt(value: Any) -> str:
    """A short repr of `value` for an error line: a few items, a few dozen characters each."""
    return _EXCERPT.repr(value)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a result file gets the usual mode
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_output_path(path: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse, before any work, an output path that cannot be created because a part of it is a file."""
    path = Path(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SmfError(f"{flag} {path}: {parent} is a file, not a folder; choose another {flag}")
            return


def size_text(limit: int) -> str:
    """2_000_000_000 → '2 GB', 64_000_000 → '64 MB': a limit as an error line names it."""
    return f"{limit / 1e9:g} GB" if limit >= 1_000_000_000 else f"{limit / 1e6:g} MB"


def _open_bounded(path: Path, limit: int, what: str, fix: str):
    """`path` opened for reading bytes, refused before any read when it is not a file or is larger than `limit`."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise SmfError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SmfError(f"{path} is a folder; give a {what}") from None
    if os.fstat(f.fileno()).st_size > limit:
        f.close()
        raise _too_large(path, limit, what, fix)
    return f


def _too_large(path: Path, limit: int, what: str, fix: str) -> SmfError:
    return SmfError(f"{path}: over {size_text(limit)}, more than a {what} holds; {fix}")


def read_bytes_bounded(path: str | os.PathLike, limit: int, what: str = "file", fix: str = "give the right file") -> bytes:
    """The bytes of `path`, refused in one line (naming the file, the limit and `fix`) when it holds more than
    `limit` bytes: its size is checked before reading, and the read stops one byte past the limit."""
    path = Path(path)
    with _open_bounded(path, limit, what, fix) as f:
        data = f.read(limit + 1)
    if len(data) > limit:  # a file that grew, or one whose size the system does not say
        raise _too_large(path, limit, what, fix)
    return data


def read_bounded(path: str | os.PathLike, limit: int, what: str = "file", fix: str = "give the right file") -> str:
    """The UTF-8 text of `path`, refused when it holds more than `limit` bytes (read no further)."""
    path = Path(path)
    data = read_bytes_bounded(path, limit, what, fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SmfError(f"{path}: not UTF-8 text (at byte {e.start}); give a {what}") from None


def read_lines(path: str | os.PathLike, *, limit: int = MAX_DATA_BYTES, line_limit: int = MAX_LINE_BYTES,
               what: str = "data file", fix: str = "give the right file", utf8_fix: str | None = None) -> Iterator[tuple[int, str]]:
    """The lines of the UTF-8 text file `path`, numbered from 1, each with its newline when it has one (the last may
    not: a record cut short); a byte-order mark before the first is dropped. Lines end at a newline only: Unicode
    line separators are characters inside a line. Read as it goes, one line at a time: refused in one line
    naming the file, the limit and `fix` when the file holds more than `limit` bytes (before any read) or a
    line more than `line_limit` (before it is read whole)."""
    path = Path(path)
    utf8_fix = utf8_fix or fix
    with _open_bounded(path, limit, what, fix) as f:
        total, n = 0, 0
        while raw := f.readline(line_limit + 1):
            n += 1
            total += len(raw)
            if total > limit:
                raise _too_large(path, limit, what, fix)
            if len(raw) > line_limit and not (len(raw) == line_limit + 1 and raw.endswith(b"\n")):
                raise SmfError(f"{path}: line {n} is over {size_text(line_limit)}, more than a line of a {what} holds; {fix}")
            start = total - len(raw)
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):  # the byte-order mark some editors write first
                raw, start = raw[3:], 3
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise SmfError(f"{path}: not UTF-8 text (line {n}, byte {start + e.start}); {utf8_fix}") from None
            yield n, line


def read_text_bounded(path: str | os.PathLike, limit: int = MAX_DATA_BYTES, what: str = "data file",
                      fix: str = "give the right file", utf8_fix: str = "save the file as UTF-8") -> str:
    """The whole UTF-8 text of `path` without a byte-order mark, refused over `limit` bytes (as `read_bytes_bounded`)."""
    path = Path(path)
    data = read_bytes_bounded(path, limit, what, fix)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SmfError(f"{path}: not UTF-8 text (byte {e.start}); {utf8_fix}") from None


def parse_json(text: str, where: str) -> Any:
    """JSON text, with its failures (syntax, nesting past Python's stack, huge integers) as one line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SmfError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise SmfError(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as e:  # integers past Python's digit limit
        raise SmfError(f"{where}: not valid JSON ({str(e).splitlines()[0][:100]})") from None


def read_json(path: str | os.PathLike, limit: int = MAX_JSON_BYTES, fix: str = "give the right file") -> Any:
    path = Path(path)
    return parse_json(read_bounded(path, limit, "JSON file", fix), str(path))


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses, before building anything, a document with more than MAX_ALIASES aliases
    or more than MAX_EXPANDED values once they are expanded: nested aliases multiply (ten of ten of
    ten...), and whatever walks the result later (a merge, an error message) would walk every copy."""

    aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases (*name), which smf does not expand")
        return super().compose_node(parent, index)

    def compose_document(self):
        node = super().compose_document()
        sizes: dict[int, int] = {}

        def size(n) -> int:  # each shared node counted once per use, computed once
            if id(n) in sizes:
                if sizes[id(n)] < 0:
                    raise yaml.YAMLError("an alias (*name) inside the value it names, which smf does not expand")
                return sizes[id(n)]
            sizes[id(n)] = -1
            children = n.value if isinstance(n, yaml.SequenceNode) else [x for pair in n.value for x in pair] if isinstance(n, yaml.MappingNode) else []
            sizes[id(n)] = 1 + sum(size(c) for c in children)
            return sizes[id(n)]

        if node is not None and size(node) > MAX_EXPANDED:
            raise yaml.YAMLError(f"more than {MAX_EXPANDED} values once its aliases (*name) are expanded")
        return node


def parse_yaml(text: str, where: str) -> Any:
    """YAML text through a safe loader that limits aliases and nesting; failures as one line."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise SmfError(f"{where}: not valid YAML ({str(e).splitlines()[0][:160]})") from None
    except RecursionError:
        raise SmfError(f"{where}: not valid YAML (nested too deeply)") from None
    finally:
        loader.dispose()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and move it to `path` only on success.

    Yields the temporary folder to write into. On any exception the temporary folder
    is removed and `path` is left as it was.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise SmfError(f"{path} already exists; choose another output folder or remove it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; an output folder gets the usual mode
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def reading(path: str | os.PathLike, fix: str = "write it again (the file is damaged or incomplete)") -> Iterator[None]:
    """Turn a failure to read a weights, checkpoint or statistics file into one line naming it."""
    try:
        yield
    except SmfError:
        raise
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SmfError(f"cannot read {path}: {first}; {fix}") from None


def read_yaml_mapping(path: str | os.PathLike, what: str = "settings") -> dict:
    """A YAML file that must hold a mapping; an empty file is an empty mapping."""
    path = Path(path)
    if not path.exists():
        raise SmfError(f"{path}: config file not found")
    data = parse_yaml(read_bounded(path, MAX_SETTINGS_BYTES, "YAML file of " + what), str(path)) or {}
    if not isinstance(data, dict):
        raise SmfError(f"{path}: expected a mapping of {what}")
    return data
