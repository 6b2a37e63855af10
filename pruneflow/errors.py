"""The one exception type users see.

Every failure a user can cause or fix (bad params, missing data, a corrupt artifact, a shape
that does not fit) raises :class:`PruneflowError` with a message that names the file, key or
layer and says what is expected. The CLI prints it as one line and exits non-zero; anything
else escaping is a bug in pruneflow.

A message never shows a password: the ``user:password@`` of any URL in it (a PostgreSQL URL
for Prefect's database, a server URL) is masked as ``user:***@`` when the error is made.
"""

from __future__ import annotations

import re

_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@\s]*@")


def mask_credentials(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` replaced by ***."""
    return _CREDENTIALS.sub(r"\g<head>:***@", text)


class PruneflowError(Exception):
    """A user-facing error: the message alone must tell the user what is wrong and where."""

    def __init__(self, message: object = "") -> None:
        super().__init__(mask_credentials(str(message)))
