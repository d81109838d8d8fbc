"""Sinks: each takes a batch, commits it atomically, and returns what was decided."""
