"""The priority lane's riders (README "Priority lane"): lane items that board the newest standard
part in the commit queue while its transaction has not begun, and are committed in it after its
items (sinks/commit_pipeline.py hands them over, sinks/postgres.py decides and writes them)."""

from __future__ import annotations

import threading


class Boarding:
    """Priority-lane items riding a standard part (README "Priority lane"): the worker may add
    them while the part waits for the commit thread; its transaction closes the boarding as it
    begins and commits them after the part's own items. A lane item that boards the newest part in
    flight commits where a lane part handed over next would (right after it), without a
    transaction, an audit export and acks of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._riders: list = []
        self._open = True

    @property
    def open(self) -> bool:
        return self._open

    @property
    def riders(self) -> list:
        return self._riders

    def board(self, items: list) -> bool:
        """Add `items` (the worker); False, and nothing added, once the transaction has begun."""
        with self._lock:
            if not self._open:
                return False
            self._riders = [*self._riders, *items]
            return True

    def close(self) -> list:
        """The transaction begins (the commit thread): the riders, final from now on."""
        with self._lock:
            self._open = False
            return self._riders


def riders_batch_id(batch_id: str) -> str:
    """The batch id of the lane items that rode batch `batch_id`: it sorts after it (and after its
    split halves, `.1` and `.2`) and before the next batch, as batch ids sort in commit order."""
    return f"{batch_id}.lane"
