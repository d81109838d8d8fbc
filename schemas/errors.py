"""Typed errors. Each carries what an operator needs to act on it."""

from __future__ import annotations


class MutaggError(Exception):
    """Base of every error this project raises on purpose."""


class RegistryError(MutaggError):
    """The entity registry is missing, malformed, or names something unknown."""


class ConfigError(MutaggError):
    """Settings are missing or invalid."""


class ValidationError(MutaggError):
    """A message could not be accepted as a mutation."""

    def __init__(self, code: str, message: str, mutation_id: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.mutation_id = mutation_id


class ServiceUnavailable(MutaggError):
    """Kafka or PostgreSQL stayed unreachable past the configured deadline."""
