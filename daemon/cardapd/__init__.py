"""cardapd: the daemon that owns the card reader and biometric device of a card AP terminal."""

from importlib.metadata import PackageNotFoundError, version

try:
    # The one version: the git tag, written into the distribution's metadata at build
    # time (setuptools-scm; docs/decisions.md D36).
    __version__ = version("cardapd")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
