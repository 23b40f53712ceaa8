"""cardap: the Python client of cardapd (library + the `cardapctl` command)."""

from cardap.client import CardapClient, CardapClientError, default_socket

__all__ = ["CardapClient", "CardapClientError", "default_socket"]
