"""Exceptions the virtual card raises instead of answering (in-process faults)."""

from __future__ import annotations


class VcardError(Exception):
    """Base class for virtual-card failures that are not status words."""


class CardTorn(VcardError):
    """The card left the reader mid-session (tear fault); nothing was answered."""


class CardMute(VcardError):
    """The card does not answer this APDU (mute fault)."""


class CardNotPowered(CardMute):
    """An APDU reached a card that is powered off; a real card would stay silent."""


class CardFileError(VcardError):
    """A card file is missing, unreadable or not in the expected format."""
