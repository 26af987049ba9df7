"""The one exception type for errors a user can cause.

Raised at the edges (bad config, missing file, wrong dataset schema); the CLI prints
its message as one line and exits with code 2. Internal invariants are assertions.
"""


class SmfError(Exception):
    """A user-facing error: the message names the problem and the fix."""


# The exceptions, by class name, that say a hub could not be asked: httpx's and requests' connection errors and
# timeouts (smf imports neither), huggingface_hub's "not in the cache, and the hub could not be asked" and its
# offline mode. Python's own ConnectionError and TimeoutError count too (`hub_unreachable`).
_UNREACHABLE = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "ConnectError", "ConnectTimeout",
                "Timeout", "TimeoutException", "NetworkError", "ProxyError", "SSLError"}


def hub_unreachable(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, says a model or dataset hub could not be reached."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (ConnectionError, TimeoutError)) or {c.__name__ for c in type(error).__mro__} & _UNREACHABLE:
            return True
        error = error.__cause__ or error.__context__
    return False
