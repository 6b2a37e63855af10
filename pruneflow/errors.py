"""The one exception type users see.

Every failure a user can cause or fix (bad params, missing data, a corrupt artifact, a shape
that does not fit) raises :class:`PruneflowError` with a message that names the file, key or
layer and says what is expected. The CLI prints it as one line and exits non-zero; anything
else escaping is a bug in pruneflow.
"""


class PruneflowError(Exception):
    """A user-facing error: the message alone must tell the user what is wrong and where."""
