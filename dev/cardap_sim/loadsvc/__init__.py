"""Reference loading service (issue 4): catalogue, card keys, user ID issuer, card sessions.

Terminals (cardapd) relay a card session to it over mutual TLS; card keys never leave it.
`session` is the pure card session engine; `server` puts it behind gRPC.
"""
