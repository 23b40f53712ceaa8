"""The My Number Card: the AID deny list, identification, the Type A/C/D/custom AP sessions,
JPKI PIN counters, the PIN guard, vendor profiles as data."""
