"""The one exception type for errors a user can cause.

Raised at the edges (bad config, missing file, wrong dataset schema); the CLI prints
its message as one line and exits with code 2. Internal invariants are assertions.
"""


class SmfError(Exception):
    """A user-facing error: the message names the problem and the fix."""


def reject_unknown_keys(cls, settings: dict, where: str) -> None:
    """Raise SmfError if `settings` has keys that are not fields of the dataclass `cls`."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise SmfError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(names))}")
