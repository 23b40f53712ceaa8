"""The daemon's side of the loading service: mTLS client, card-session relay, operators."""
