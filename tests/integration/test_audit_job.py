"""The audit and the metrics inside a real `mutagg run`: a kill -9 right after a
commit (before that batch's files exist) and a restart leave every ledger row and
conflict in the audit exactly once; the endpoint, scraped during a run, agrees with
the ledger. Skipped until the sinks are wired into the dataflow (see sinks/audit.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import fields

import pyarrow.dataset as ds
import pytest

from dataflows.runtime import Runtime
from mutagg.ports import free_port
from mutagg.producer import produce
from mutagg.settings import Settings
from mutagg.workload import Workload
from schemas.audit import PARTITIONING
from tests.integration.conftest import mutagg, query, read_topic, run_job, settings_env
from tests.integration.test_metrics import by, scrape

WIRED = hasattr(Runtime, "audit") and "metrics_port" in {f.name for f in fields(Settings)}
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not WIRED, reason="audit export and metrics are not wired into the dataflow yet"),
]


def audit_keys(audit, dataset: str, key: str) -> Counter:
    table = ds.dataset(audit / dataset, format="parquet", partitioning=PARTITIONING).to_table(columns=[key])
    return Counter(table.column(key).to_pylist())


@pytest.mark.parametrize("with_recovery", [False, True])
def test_a_kill_after_commit_then_a_restart_leaves_the_audit_exact(settings, tmp_path, with_recovery):
    produce(settings, Workload(seed=17).generate(2500))
    audit = tmp_path / "audit"
    env = {"MUTAGG_AUDIT_URI": str(audit), "MUTAGG_BATCH_SIZE": "300", "MUTAGG_SNAPSHOT_INTERVAL_S": "0.5",
           "MUTAGG_METRICS_PORT": "0"}
    if with_recovery:
        env["MUTAGG_RECOVERY_DIR"] = str(tmp_path / "recovery")
        mutagg(settings, "--recovery-dir", env["MUTAGG_RECOVERY_DIR"], "recovery", "init", "--partitions", "2")
    job = subprocess.Popen(
        [sys.executable, "-m", "mutagg.cli", "run", "--until-idle"],
        env=settings_env(settings, MUTAGG_FAULT_POINT="after_commit:3", **env),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert job.wait(120) == -signal.SIGKILL, job.stderr.read()[-3000:]
    committed = {row[0] for row in query(settings, "SELECT DISTINCT batch_id FROM mutation_log")}
    exported = {p.name.removeprefix("part-").removesuffix(".parquet") for p in audit.rglob("part-*.parquet")}
    assert committed - exported, "the killed batch committed but was not exported"
    run_job(settings, **env)
    ledger = [row[0] for row in query(settings, "SELECT mutation_id FROM mutation_log")]
    conflicts = [row[0] for row in query(settings, "SELECT conflict_id FROM conflicts")]
    assert audit_keys(audit, "mutations", "mutation_id") == Counter(ledger)
    assert audit_keys(audit, "conflicts", "conflict_id") == Counter(conflicts)


def test_metrics_scraped_during_a_run_agree_with_the_ledger(settings, tmp_path):
    port = free_port()
    job = subprocess.Popen(
        [sys.executable, "-m", "mutagg.cli", "run"],
        env=settings_env(settings, MUTAGG_METRICS_PORT=str(port), MUTAGG_AUDIT_URI=str(tmp_path / "audit")),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        messages = Workload(seed=5).generate(1500)
        produce(settings, messages)
        deadline = time.monotonic() + 90
        while True:
            assert job.poll() is None, job.stderr.read()[-3000:]
            try:
                samples = scrape(port)
            except OSError:
                samples = {}
            decided = sum(v for _l, v in samples.get("mutagg_mutations_total", []))
            lag = sum(v for _l, v in samples.get("mutagg_consumer_lag_messages", []))
            if decided == len(messages) and samples.get("mutagg_consumer_lag_messages") and lag == 0:
                break
            assert time.monotonic() < deadline, f"{decided} of {len(messages)} counted, lag {lag}"
            time.sleep(0.3)
    finally:
        job.send_signal(signal.SIGINT)
        job.wait(30)
    counted = by(samples["mutagg_mutations_total"], "entity_type", "status")
    ledger = Counter({(t, s): n for t, s, n in query(
        settings, "SELECT entity_type, status, count(*) FROM mutation_log GROUP BY 1, 2")})
    ledger.update({(t, "DUPLICATE"): n for t, n in query(
        settings, "SELECT m.entity_type, count(*) FROM mutation_duplicates d JOIN mutation_log m USING (mutation_id) "
                  "GROUP BY 1")})
    for (entity_type, status), count in ledger.items():
        if entity_type in {"customer", "article", "stock_level", "sales_order", "order_line"}:
            assert counted[(entity_type, status)] == count, (entity_type, status)
    conflicts = Counter({tuple(row[:3]): row[3] for row in query(
        settings, "SELECT entity_type, strategy, COALESCE(winner, 'open'), count(*) FROM conflicts GROUP BY 1, 2, 3")})
    assert by(samples["mutagg_conflicts_total"], "entity_type", "strategy", "winner") == conflicts
    dlq = read_topic(settings, settings.topic_dlq)
    assert sum(v for _l, v in samples["mutagg_dlq_messages_total"]) == len(dlq)
