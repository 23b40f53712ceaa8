"""cardap: the Python client of cardapd (library + the `cardapctl` command)."""

from importlib.metadata import PackageNotFoundError, version

from cardap.client import CardapClient, CardapClientError, default_socket

try:
    # The client ships in the production distribution "cardapd": one version for both.
    __version__ = version("cardapd")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["CardapClient", "CardapClientError", "__version__", "default_socket"]
