"""Layer 5: the operations (watch, read user ID, diagnose, ...). Knows no gRPC."""
