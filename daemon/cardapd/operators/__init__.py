"""Operators: the roster (organisations, operators, rights, approvals), sessions bound to the
socket, login by fingerprint through fprintd or by an approved password, enrolment."""
