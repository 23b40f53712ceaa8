"""GlobalPlatform card content management: SCP03, keys, registry and command builders.

Shared by the daemon, the loading service and the virtual card. Everything here except
`channel` is pure (no I/O), so a session can live wherever the card keys are.
"""
