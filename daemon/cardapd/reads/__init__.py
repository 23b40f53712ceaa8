"""Reads: user ID reads of Type C, A, D and custom APs through the one PIN guard, and the
revocation feeds and local suspensions that give each read its status."""
