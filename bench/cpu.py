"""Where a benchmark phase's CPU went: the whole machine, PostgreSQL and Kafka.

The job's own CPU says how costly its code is; what bounds it on a machine shared
with its database and broker is the CPU of all three per mutation. With that, a
phase's *ceiling* is what the same work could reach with every core busy:
`cores / machine CPU per item`, whatever threads or processes did the work.

Read from /proc (Linux): the machine from /proc/stat; PostgreSQL as the postmaster
and its children (a backend that exits during the phase is counted through the
postmaster's children's time); Kafka as the broker's JVM, found by the pid file of
`services/services.sh` if it listens where the bench connects. A service not running
on this machine is not measured.
"""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds over one phase (None: not measured)."""

    machine_s: float | None
    postgres_s: float | None
    kafka_s: float | None
    own_s: float | None = None
    """This process's (the bench driving the limit and naive rows itself)."""
    job_s: float | None = None
    """The job's (`measure(job_pid=…)`: the process and its children)."""


def machine_busy_s(stat_text: str) -> float:
    """Busy CPU seconds of every core from /proc/stat's `cpu` line (idle, iowait and steal
    are not busy; guest time is already inside user)."""
    line = next(line for line in stat_text.splitlines() if line.startswith("cpu "))
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in line.split()[1:8])
    return (user + nice + system + irq + softirq) / _TICK


def process_times(stat_text: str) -> tuple[int, float, float]:
    """(parent pid, own CPU s, waited-for children's CPU s) from one /proc/<pid>/stat."""
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = stat_text[stat_text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return int(fields[1]), (utime + stime) / _TICK, (cutime + cstime) / _TICK


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:  # gone, or not ours to read
        return None


def _processes() -> dict[int, tuple[int, float, float]]:
    """Every readable process: pid -> `process_times`."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            text = _read(f"/proc/{entry.name}/stat")
            if text is not None:
                found[int(entry.name)] = process_times(text)
    return found


def _tree_cpu_s(root: int, processes: dict[int, tuple[int, float, float]]) -> float | None:
    """CPU of `root`, its live children and the children it has reaped."""
    if root not in processes:
        return None
    _, own, reaped = processes[root]
    return own + reaped + sum(cpu + child_reaped for parent, cpu, child_reaped in processes.values()
                              if parent == root)


def _is(pid: int, word: str) -> bool:
    cmdline = _read(f"/proc/{pid}/cmdline")
    return cmdline is not None and word in cmdline


def postmaster_pid(database_url: str) -> int | None:
    """The local PostgreSQL server's postmaster: the parent of our own backend."""
    try:
        with psycopg.connect(database_url, connect_timeout=10) as connection:
            backend = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
            # Read while the backend lives; another machine's (or container's) pids are not ours.
            text = _read(f"/proc/{backend}/stat") if _is(backend, "postgres") else None
    except psycopg.Error:
        return None
    if text is None:
        return None
    parent = process_times(text)[0]
    return parent if _is(parent, "postgres") else None


def kafka_pid(bootstrap: str, state_dir: str | None = None) -> int | None:
    """The broker started by services/services.sh, if it runs here and is the one at `bootstrap`."""
    directory = Path(state_dir or os.environ.get("MUTAGG_STATE_DIR") or REPO / ".local" / "services") / "kafka"
    text = _read(str(directory / "kafka.pid"))
    properties = _read(str(directory / "server.properties")) or ""
    listeners = next((line for line in properties.splitlines() if line.startswith("advertised.listeners=")), "=")
    addresses = {listener.partition("//")[2] for listener in listeners.partition("=")[2].split(",")}
    if text is None or not text.strip().isdigit() or bootstrap not in addresses:
        return None
    pid = int(text.strip())
    return pid if _is(pid, "kafka.Kafka") else None


class CpuMeter:
    """Measures phases: `with meter.measure() as use: ...` then `use()` gives a `CpuUse`."""

    def __init__(self, database_url: str, kafka_bootstrap: str):
        self.postgres = postmaster_pid(database_url)
        self.kafka = kafka_pid(kafka_bootstrap)

    def _sample(self, job_pid: int | None) -> tuple[float | None, ...]:
        machine = _read("/proc/stat")
        own = resource.getrusage(resource.RUSAGE_SELF)
        processes = _processes()  # one pass over /proc for every process tree asked for
        return (
            None if machine is None else machine_busy_s(machine),
            None if self.postgres is None else _tree_cpu_s(self.postgres, processes),
            None if self.kafka is None else _tree_cpu_s(self.kafka, processes),
            own.ru_utime + own.ru_stime,
            None if job_pid is None else _tree_cpu_s(job_pid, processes),
        )

    @contextmanager
    def measure(self, job_pid: int | None = None) -> Iterator[Callable[[], CpuUse]]:
        """`job_pid`: a process (with its children) whose CPU over the phase is wanted too."""
        before = self._sample(job_pid)
        result: list[CpuUse] = []
        try:
            yield lambda: result[0]
        finally:
            after = self._sample(job_pid)
            result.append(CpuUse(*(None if a is None or b is None else a - b for a, b in zip(after, before))))


class JobBackends:
    """The CPU of the PostgreSQL backends serving one job, on a server other clients share:
    `with JobBackends(database_url, launcher_pid) as backends: ...`, then `backends.cpu_s`.

    Every `interval_s` it finds the job's TCP connections (the sockets of the launcher and its
    descendants, their local ports in /proc/net/tcp), asks `pg_stat_activity` which backends
    serve those ports, and reads each one's CPU from /proc. A backend's CPU after its last
    sample is not seen: a lower bound, short by at most one interval of each backend's work.
    """

    def __init__(self, database_url: str, launcher_pid: int, interval_s: float = 0.2):
        self.database_url = database_url
        self.launcher = launcher_pid
        self.interval_s = interval_s
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-backends", daemon=True)

    @property
    def cpu_s(self) -> float:
        return sum(self._seen.values())

    def __enter__(self) -> JobBackends:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            while not self._stop.wait(self.interval_s):
                ports = _client_ports(_descendants(self.launcher))
                if not ports:
                    continue
                rows = connection.execute(
                    "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", (sorted(ports),)).fetchall()
                for (pid,) in rows:
                    text = _read(f"/proc/{pid}/stat")
                    if text is not None:
                        self._seen[pid] = max(self._seen.get(pid, 0.0), process_times(text)[1])


def _descendants(root: int) -> set[int]:
    parents = {pid: parent for pid, (parent, _own, _reaped) in _processes().items()}
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, of in parents.items() if of == parent and pid not in found]
        found.update(children)
        frontier += children
    return found


def _client_ports(pids: set[int]) -> set[int]:
    """Local TCP ports of the sockets these processes hold open."""
    inodes = set()
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in (_read(table) or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports
