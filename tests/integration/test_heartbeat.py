"""The probes of a real `mutagg run`: /healthz follows the dataflow's own worker loop, not the
HTTP thread. A worker stuck in a step (the `hang_worker` fault point) turns /healthz to 503
within MUTAGG_HEARTBEAT_TIMEOUT_S while /metrics still answers; /readyz answers once the
dataflow runs and the database and broker answered."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from mutagg.heartbeat import HEARTBEAT
from mutagg.metrics import JobMetrics, StateRefresher
from mutagg.ports import free_port
from mutagg.producer import produce
from mutagg.workload import Message, Workload
from tests.integration.conftest import query, read_topic, settings_env

pytestmark = pytest.mark.integration


def probe(port: int, path: str) -> tuple[int, str]:
    """(HTTP status, body) of `path`; (0, error) while nothing listens yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


def wait_for(job: subprocess.Popen, check, what: str, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while True:
        if job.poll() is not None:
            raise AssertionError(f"the job exited {job.returncode} while waiting for {what}:\n"
                                 f"{job.stderr.read()[-3000:]}")
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} within {timeout_s}s"
        time.sleep(0.1)


def test_a_stuck_worker_fails_liveness_while_metrics_still_answer(settings, tmp_path):
    port = free_port()
    job = subprocess.Popen(
        [sys.executable, "-m", "mutagg.cli", "run"],
        env=settings_env(settings, MUTAGG_METRICS_PORT=str(port), MUTAGG_AUDIT_URI=str(tmp_path / "audit"),
                         MUTAGG_HEARTBEAT_TIMEOUT_S="1.5", MUTAGG_FAULT_POINT="hang_worker:1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # Alive and ready while idle: the heartbeat input turns every worker loop without any input.
        wait_for(job, lambda: probe(port, "/readyz")[0] == 200, "readiness")
        # Healthy at every look over a window longer than the timeout: an idle loop still beats.
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            status, reason = probe(port, "/healthz")
            assert status == 200, reason
            time.sleep(0.2)
        produce(settings, Workload(seed=3).generate(20))  # the first batch's flush hangs the worker
        _status, reason = wait_for(
            job, lambda: (found := probe(port, "/healthz"))[0] == 503 and found, "a failing liveness probe")
        assert "stuck" in reason, reason
        metrics_status, text = probe(port, "/metrics")
        assert metrics_status == 200 and "mutagg_mutations_total" in text
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait(30)


class Cable:
    """A TCP forwarder to PostgreSQL that a test can cut (every connection dropped, new ones
    refused) and mend: the shared server itself is never stopped."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._links: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self.mend()

    def mend(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._listener.close()
            for link in self._links:
                with contextlib.suppress(OSError):
                    link.shutdown(socket.SHUT_RDWR)
                link.close()
            self._links.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            server = socket.create_connection(self.target)
            with self._lock:
                if listener.fileno() == -1:  # cut while this one connected
                    client.close()
                    server.close()
                    return
                self._links += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_a_job_whose_database_goes_away_stays_alive_and_is_not_ready(settings, tmp_path):
    url = urlsplit(settings.database_url)
    cable = Cable((url.hostname, url.port))
    through = urlunsplit(url._replace(netloc=url.netloc.replace(f":{url.port}", f":{cable.port}")))
    port = free_port()
    job = subprocess.Popen(
        [sys.executable, "-m", "mutagg.cli", "run"],
        env=settings_env(settings, MUTAGG_DATABASE_URL=through, MUTAGG_METRICS_PORT=str(port),
                         MUTAGG_AUDIT_URI=str(tmp_path / "audit"), MUTAGG_HEARTBEAT_TIMEOUT_S="1.5",
                         MUTAGG_SERVICE_DEADLINE_S="60"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(job, lambda: probe(port, "/readyz")[0] == 200, "readiness")
        cable.cut()
        produce(settings, Workload(seed=4).generate(20))  # its commit and export now wait for PostgreSQL
        _status, reason = wait_for(job, lambda: (found := probe(port, "/readyz"))[0] == 503 and found, "unready")
        assert "PostgreSQL" in reason or "database" in reason, reason
        answers = []
        until = time.monotonic() + 4.0  # well past the heartbeat timeout: never a liveness failure
        while time.monotonic() < until:
            answers.append(probe(port, "/healthz"))
            time.sleep(0.2)
        assert {status for status, _reason in answers} == {200}, answers
        assert probe(port, "/readyz")[0] == 503
        cable.mend()  # PostgreSQL is back: the batch commits, the job is ready again
        wait_for(job, lambda: query(settings, "SELECT count(*) FROM mutation_log")[0][0] == 20, "the commit", 40)
        wait_for(job, lambda: probe(port, "/readyz")[0] == 200, "readiness again", timeout_s=40)
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait(30)
        cable.cut()


def test_the_last_commit_and_the_lag_in_time_come_from_the_database_and_the_broker(settings):
    """A new process reports the last commit any run recorded (not its own start), and how old the
    oldest message not yet committed is, from its Kafka timestamp."""
    old = int(time.time() * 1000) - 3_600_000  # an hour ago
    produce(settings, [Message(b"k", b"{}", old + i * 1000) for i in range(3)])
    (partition,) = {record.partition() for record in read_topic(settings, settings.topic_mutations)}
    stamps = [record.timestamp()[1] for record in read_topic(settings, settings.topic_mutations)]
    with psycopg.connect(settings.database_url) as connection:
        connection.execute("INSERT INTO job_commits (run_id, batches, last_batch_id, updated_at) "
                           "VALUES ('earlier-run', 7, 'b7', now() - interval '2 hours')")
        connection.execute("INSERT INTO source_offsets (kafka_topic, kafka_partition, next_offset) "
                           "VALUES (%s, %s, 1)", (settings.topic_mutations, partition))
    recorded = query(settings, "SELECT extract(epoch FROM updated_at)::float8 FROM job_commits")[0][0]

    metrics = JobMetrics(entity_types=["customer"])
    refresher = StateRefresher(metrics, settings)
    HEARTBEAT.reset()
    HEARTBEAT.expect("database", "kafka")
    HEARTBEAT.beat(0)
    refresher.refresh_once()
    sample = metrics.registry.get_sample_value
    assert sample("mutagg_last_commit_timestamp_seconds") == recorded
    lag = {p: sample("mutagg_consumer_lag_seconds", {"topic": settings.topic_mutations, "partition": str(p)})
           for p in range(4)}
    expected = time.time() - stamps[1] / 1000  # the message at the committed position, offset 1
    assert expected - 30 < lag[partition] <= expected + 1, (lag, expected)
    assert all(lag[p] == 0 for p in range(4) if p != partition)
    assert HEARTBEAT.readiness().ok, HEARTBEAT.readiness()

    with psycopg.connect(settings.database_url) as connection:  # everything committed: no lag left
        connection.execute("UPDATE source_offsets SET next_offset = 3")
    refresher.refresh_once()
    assert sample("mutagg_consumer_lag_seconds", {"topic": settings.topic_mutations, "partition": str(partition)}) == 0
    refresher.close()
    HEARTBEAT.reset()
