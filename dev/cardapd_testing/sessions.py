"""TEST-ONLY operator sessions: `test:<organisation>:<operator>[:<right>,<right>]` tokens.

Integration tests of loading need an operator without a fingerprint at every step. This
provider accepts any token of that shape (default rights: load and delete). It is wired
only by `cardapd_testing.main`; the production entry point `cardapd` knows no test tokens
(they are refused like any unknown session).
"""

from __future__ import annotations

import re

from cardapd.domain import Operator, Right
from cardapd.errors import Unauthenticated

_TOKEN = re.compile(r"test:([a-z0-9][a-z0-9._-]{0,63}):([A-Za-z0-9._-]{1,64})(?::([a-z,]*))?")
DEFAULT_RIGHTS = frozenset({Right.LOAD, Right.DELETE})


class TestOperatorSessions:
    """Accepts `test:` tokens; anything else is UNAUTHENTICATED."""

    __test__ = False  # not a pytest class

    def validate(self, token: str) -> Operator:
        """The operator a test token names."""
        m = _TOKEN.fullmatch(token or "")
        if m is None:
            raise Unauthenticated("no valid operator session (test tokens look like "
                                  "test:<organisation>:<operator>)", reason="NO_OPERATOR_SESSION")
        rights = DEFAULT_RIGHTS
        if m.group(3) is not None:
            try:
                rights = frozenset(Right(r) for r in m.group(3).split(",") if r)
            except ValueError:
                raise Unauthenticated("unknown right in the test token",
                                      reason="NO_OPERATOR_SESSION") from None
        return Operator(m.group(1), m.group(2), rights)
