"""One command at a time on one output: a lock file beside the output path.

Two commands writing one output race each other's staging folders and leave a mix of two runs;
the second one is refused instead. The lock is a file `.NAME.lock` in the output's parent
folder, created exclusively (O_CREAT|O_EXCL) with the holder's pid in it and removed when the
command ends. A lock whose pid no longer runs (the holder was killed) is stale and taken over.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from smf.errors import SmfError


def lock_path(out: Path) -> Path:
    out = Path(out).expanduser().absolute()
    return out.parent / f".{out.name}.lock"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _holder(lock: Path) -> int | None:
    """The pid written in `lock`; None when it cannot be read as one (being written, or not smf's)."""
    try:
        return int(lock.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold the lock of output `out` while the block runs; SmfError if another running command holds it.
    Without the output's parent folder there is nothing to lock beside (and nothing written yet to protect)."""
    lock = lock_path(out)
    # The other processes of one distributed command (RANK > 0) work under their main process's lock.
    if not lock.parent.is_dir() or os.environ.get("RANK", "0") != "0":
        yield
        return
    for _ in range(2):  # a second try after taking over a stale lock
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _holder(lock)
            if pid is not None and not _running(pid):
                lock.unlink(missing_ok=True)
                continue
            holder = f"process {pid}" if pid is not None else "another command"
            raise SmfError(f"{out} is in use by {holder} (lock {lock}); wait for it to finish, or delete the lock if "
                           "no smf command is running") from None
        break
    else:
        raise SmfError(f"{out}: could not take the lock {lock}; delete it if no smf command is running")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")
        yield
    finally:
        lock.unlink(missing_ok=True)
