"""The link to the loading service: the daemon's one adapter of its wire protocol."""
