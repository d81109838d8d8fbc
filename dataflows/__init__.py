"""Thin wiring: the Bytewax graph built from sources, operators and sinks."""
