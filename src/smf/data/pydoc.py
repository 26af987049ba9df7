"""Python's own documentation prose: the offline stand-in for a perplexity probe.

`pydoc_data.topics` ships with every CPython: 79 help topics ("assert", "calls",
"formatstrings", ...) of English reference prose with some code, ≈465K characters in
Python 3.11. We split it by topic into three disjoint parts:

- `background`: for background access statistics and for healing memory layers;
- `heldout`: for measuring perplexity (forgetting), never trained on;
- `val`: a validation probe for choosing hyperparameters (never reported as a result).

Split rule: with h = sha256(topic name) mod 5, a topic is held out when h == 0, in the
validation part when h == 1, else background. It depends only on the topic's name, so a
topic stays on its side across Python versions (versions add, drop or edit topics, which
changes the sizes but never moves a topic). Sizes on Python 3.11.7: heldout 17 topics,
74,937 characters; see `tests/data/test_data_pydoc.py` for the others.

Each topic is one Document (id "pydoc/<topic>", text as shipped), in topic-name order.
"""

from __future__ import annotations

import hashlib

from smf.data.types import Document
from smf.errors import SmfError

PARTS = ("background", "heldout", "val")
HELDOUT_MODULUS = 5  # about one topic in five is held out, one in five kept for validation


def topic_part(topic: str) -> str:
    """Which part a topic belongs to: "heldout", "val" or "background" (by its name's hash)."""
    digest = hashlib.sha256(topic.encode("utf-8")).digest()
    h = int.from_bytes(digest, "big") % HELDOUT_MODULUS
    return "heldout" if h == 0 else "val" if h == 1 else "background"


def _topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise SmfError(
            "this Python has no pydoc_data module (some distributions split it out); "
            "install the full standard library (e.g. the python3 package, not python3-minimal)"
        ) from None
    return topics


def pydoc_documents(part: str, limit: int | None = None) -> list[Document]:
    """The topics of one part as Documents, sorted by topic name; `limit` keeps the first ones."""
    if part not in PARTS:
        raise SmfError(f"unknown pydoc part {part!r}; use one of {', '.join(PARTS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise SmfError(f"limit must be a non-negative integer, got {limit!r}")
    topics = _topics()
    documents = [Document(id=f"pydoc/{name}", text=topics[name]) for name in sorted(topics) if topic_part(name) == part]
    return documents if limit is None else documents[:limit]


def pydoc_texts(part: str, limit: int | None = None) -> list[str]:
    """The texts of `pydoc_documents(part, limit)`, for training-style use (healing, statistics)."""
    return [doc.text for doc in pydoc_documents(part, limit)]
