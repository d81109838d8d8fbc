"""The job's garbage collector policy (mutagg/collector.py): automatic collection off while it
runs, a full collection per interval, the previous state back after `close`."""

from __future__ import annotations

import gc
import threading

import pytest

from mutagg.collector import PeriodicCollector
from mutagg.settings import load_settings
from schemas.errors import ConfigError

WAIT_S = 30.0  # a bound on waiting for the collector's thread, not a pause


def test_collections_come_from_the_thread_while_the_automatic_ones_are_off():
    calls: list[bool] = []
    twice = threading.Event()

    def collect() -> int:
        calls.append(gc.isenabled())
        if len(calls) >= 2:
            twice.set()
        return 0

    gc.enable()
    collector = PeriodicCollector(0.01, collect)
    collector.start()
    try:
        assert not gc.isenabled()
        assert twice.wait(WAIT_S), "no periodic collection"
    finally:
        collector.close()
    assert gc.isenabled()  # as it was before
    assert calls and not any(calls)  # every collection ran with the automatic ones off
    count = len(calls)
    assert collector._thread is None and len(calls) == count  # the thread has ended: none after close


def test_a_collector_left_off_stays_off():
    gc.disable()
    try:
        collector = PeriodicCollector(0.01, lambda: 0)
        collector.start()
        collector.close()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_interval_zero_keeps_pythons_automatic_collection():
    calls: list[int] = []
    collector = PeriodicCollector(0, lambda: calls.append(1) or 0)
    collector.start()
    assert gc.isenabled()
    collector.close()
    assert calls == [] and gc.isenabled()


def test_the_interval_is_a_setting_and_a_negative_one_is_refused():
    assert load_settings(environ={}).gc_interval_s == 300
    assert load_settings(environ={"MUTAGG_GC_INTERVAL_S": "0"}).gc_interval_s == 0
    with pytest.raises(ConfigError, match="gc_interval_s"):
        load_settings(environ={"MUTAGG_GC_INTERVAL_S": "-1"})
