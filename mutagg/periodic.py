"""A daemon thread doing one thing every few seconds until it is closed: the metrics refresher,
the throttle's sampler and the central-state publisher are each one."""

from __future__ import annotations

import threading


class Periodic:
    """Calls `tick()` on a daemon thread every `interval_s` (or the seconds `tick` returns) until
    `close()`; `finish()` runs on that thread at its end (the thread owns its clients)."""

    def __init__(self, name: str, interval_s: float):
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def close(self, timeout_s: float = 2.0) -> bool:
        """Stop soon; a tick in flight (bounded by its own timeouts) is waited for at most
        `timeout_s`. True if the thread had been started."""
        self._stop.set()
        started = self._thread.is_alive()
        if started:
            self._thread.join(timeout=timeout_s)
        return started

    def tick(self) -> float | None:
        raise NotImplementedError

    def finish(self) -> None:
        """Release what the thread holds (called on the thread, after the last tick)."""

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                wait = self.tick()
                self._stop.wait(self.interval_s if wait is None else wait)
        finally:
            self.finish()
