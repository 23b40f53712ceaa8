"""The virtual My Number Card: an in-process card model plus a vpcd link for real pcscd."""
