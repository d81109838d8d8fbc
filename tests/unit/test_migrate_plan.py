"""What `mutagg migrate` decides without a database: when it retries (a bounded, doubling
backoff), and the DDL fingerprint that lets a current schema be left alone."""

from __future__ import annotations

import dataclasses

import pytest

from mutagg.migrate import LockPolicy
from mutagg.settings import load_settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas import ddl
from schemas.errors import ConfigError
from schemas.registry import Attribute, Registry, load_registry

REGISTRY = load_registry(load_settings(environ={}).registry, custom_strategies=CUSTOM_STRATEGIES)


def test_retries_wait_longer_each_time_up_to_a_cap():
    assert LockPolicy(attempts=5, backoff_s=2.0).delays() == [2.0, 4.0, 8.0, 16.0]
    assert LockPolicy(attempts=9, backoff_s=10.0, backoff_cap_s=60.0).delays()[-3:] == [60.0, 60.0, 60.0]
    assert LockPolicy(attempts=1).delays() == []


def test_the_fingerprint_changes_with_the_registry_and_the_release_and_nothing_else():
    again = load_registry(load_settings(environ={}).registry, custom_strategies=CUSTOM_STRATEGIES)
    assert ddl.fingerprint(REGISTRY) == ddl.fingerprint(again)
    customer = REGISTRY.get("customer")
    wider = dataclasses.replace(customer, attributes={
        **customer.attributes, "loyalty_tier": Attribute("loyalty_tier", "string", "last_writer_wins")})
    changed = Registry({**REGISTRY.entity_types, "customer": wider}, REGISTRY.source)
    assert ddl.fingerprint(changed) != ddl.fingerprint(REGISTRY)
    fewer = Registry({k: v for k, v in REGISTRY.entity_types.items() if k != "article"}, REGISTRY.source)
    assert ddl.fingerprint(fewer) != ddl.fingerprint(REGISTRY)
    moved = Registry(REGISTRY.entity_types, "/elsewhere/registry.yaml")  # same DDL from another file
    assert ddl.fingerprint(moved) == ddl.fingerprint(REGISTRY)


def test_the_fingerprint_covers_the_schema_version(monkeypatch):
    before = ddl.fingerprint(REGISTRY)
    monkeypatch.setattr(ddl, "SCHEMA_VERSION", ddl.SCHEMA_VERSION + 1)
    assert ddl.fingerprint(REGISTRY) != before


@pytest.mark.parametrize("environ", [
    {"MUTAGG_MIGRATE_LOCK_TIMEOUT_S": "0"}, {"MUTAGG_MIGRATE_ATTEMPTS": "0"},
    {"MUTAGG_MIGRATE_RETRY_BACKOFF_S": "-1"}, {"MUTAGG_TOPIC_RETENTION_STATUS_MS": "0"},
    {"MUTAGG_TOPIC_REPLICATION": "2", "MUTAGG_TOPIC_MIN_INSYNC_REPLICAS": "3"},
])
def test_settings_that_could_never_work_are_refused(environ):
    with pytest.raises(ConfigError):
        load_settings(environ=environ)
    assert load_settings(environ={"MUTAGG_TOPIC_RETENTION_DLQ_MS": "-1"}).topic_retention_dlq_ms == -1  # forever
