"""Readers: one owner per reader, the reader table and the card event stream,
identification and tap-to-ID at insertion, and card fault isolation (diagnose)."""
