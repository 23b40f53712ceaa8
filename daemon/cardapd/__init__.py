"""cardapd: the daemon that owns the card reader and biometric device of a card AP terminal."""

__version__ = "0.1.0"
