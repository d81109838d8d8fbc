"""Typed errors of the edge-node client. Each says what the caller can act on."""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error the edge client raises on purpose."""


class InvalidMutation(EdgeError):
    """A local change that the central job would reject; it is never recorded."""

    def __init__(self, code: str, message: str, mutation_id: str | None = None):
        super().__init__(f"{code}: {message}" + (f" (mutation {mutation_id})" if mutation_id else ""))
        self.code = code
        self.message = message
        self.mutation_id = mutation_id


class OutboxError(EdgeError):
    """The outbox file cannot be used: another node's file, or a newer schema."""


class IllegalTransition(EdgeError):
    """An outbox entry was asked to move to a state its current state cannot reach."""

    def __init__(self, state: str, event: str):
        super().__init__(f"an entry in state {state} cannot take event {event}")
        self.state = state
        self.event = event


class InvalidAck(EdgeError):
    """A record on the status topic is not an acknowledgement this client understands."""
