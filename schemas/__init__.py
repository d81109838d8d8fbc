"""Typed records at the edges: the mutation, the entity registry, column types."""
