"""Layer 4: the My Number Card model: built-in APs, identification, Type C, JPKI, the PIN guard."""
