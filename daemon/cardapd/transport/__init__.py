"""Layer 1: talking to readers and cards (PC/SC through pcscd, or an in-process card)."""
