"""The edge-node client: a durable SQLite outbox, an ordered idempotent sender with
backoff, an acknowledgement listener, and a fleet simulator built on them.

Pure rules (`transitions`, `backoff`, `routing`, `erp`, `central`, `deferral`) hold no
I/O; `outbox`, `sender`, `acks` and `central_listener` are the I/O pieces; `client.EdgeNode`
puts them together.
The package depends on nothing of the job's but the wire format (DESIGN section 2).
"""

from edge.backoff import Backoff
from edge.client import EdgeConfig, EdgeNode
from edge.errors import EdgeError, IllegalTransition, InvalidAck, InvalidMutation, OutboxError
from edge.records import Ack, EdgeMutation, EntryState, Operation, OutboxEntry

__all__ = [
    "Ack",
    "Backoff",
    "EdgeConfig",
    "EdgeError",
    "EdgeMutation",
    "EdgeNode",
    "EntryState",
    "IllegalTransition",
    "InvalidAck",
    "InvalidMutation",
    "Operation",
    "OutboxEntry",
    "OutboxError",
]
