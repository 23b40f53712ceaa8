"""GlobalPlatform card content management: SCP03, keys, registry and command builders.

Everything here except `channel` is pure (no I/O), so a session can live wherever the
card keys are: in the loading service, or on the card side of the simulator.
"""
