"""EDX Arena harness: the pure science library (no web or queue imports)."""

HARNESS_VERSION = "0.1.0"
