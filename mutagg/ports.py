"""Free TCP ports on 127.0.0.1 for processes started on this host (a Bytewax cluster's addresses,
a metrics endpoint, a broker under test), and the `mutagg run` arguments of a local cluster."""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the OS reports free now (all bound at once, then released: another
    program may still take one before the caller does)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def free_port() -> int:
    return free_ports(1)[0]


def cluster_args(processes: int) -> list[tuple[str, ...]]:
    """`mutagg run` arguments of each process of a cluster of `processes` on this host (no
    arguments for one process)."""
    if processes == 1:
        return [()]
    addresses = ",".join(f"127.0.0.1:{port}" for port in free_ports(processes))
    return [("--process-id", str(index), "--addresses", addresses) for index in range(processes)]
