"""Benchmarks of cardapd on the real stack (pcscd + vpcd + virtual card + daemon).

`python -m bench.run --out docs/benchmarks.md` (or `make bench`) measures, in one run on
one stack: the empty-RPC floor (gRPC health Check), a direct pyscard Type C read, the
daemon's ReadUserID (cached and fresh) and the insert-to-event latency of the daemon's
event stream against pyscard's CardMonitor.
"""
