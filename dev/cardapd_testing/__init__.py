"""Test-only pieces of the daemon. Nothing here is reachable from a configuration key.

`python -m cardapd_testing.main` is the only way in (it is not a console script).
"""
