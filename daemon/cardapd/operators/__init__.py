"""Operators: biometric login and enrolment through fprintd (roster and sessions come later)."""
