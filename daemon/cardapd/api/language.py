"""The language of one call: its gRPC metadata `accept-language`, else `[daemon] language`.

Only what goes back to the caller is translated (`cardap.i18n`); the daemon's logs and
audit rows stay in codes and English.
"""

from __future__ import annotations

from typing import Any

from cardap.i18n import negotiate

HEADER = "accept-language"


def call_language(context: Any, default: str) -> str:
    """The best supported language the caller asked for (`default` when none)."""
    try:
        metadata = context.invocation_metadata() or ()
    except (AttributeError, RuntimeError):
        return default
    for item in metadata:
        key, value = item[0], item[1]
        if key.lower() == HEADER:
            return negotiate(value if isinstance(value, str) else value.decode("ascii",
                                                                                 "replace"),
                             default)
    return default
