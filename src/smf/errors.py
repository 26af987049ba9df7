"""The one exception type for errors a user can cause.

Raised at the edges (bad config, missing file, wrong dataset schema); the CLI prints
its message as one line and exits with code 2. Internal invariants are assertions.
"""


class SmfError(Exception):
    """A user-facing error: the message names the problem and the fix."""
