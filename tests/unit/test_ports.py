"""mutagg/ports.py: distinct free ports, and the arguments of a local cluster."""

from __future__ import annotations

import socket

from mutagg.ports import cluster_args, free_ports


def test_free_ports_are_distinct_and_can_be_bound():
    ports = free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


def test_a_cluster_of_one_process_takes_no_arguments_and_of_three_one_address_list():
    assert cluster_args(1) == [()]
    processes = cluster_args(3)
    assert [args[:2] for args in processes] == [("--process-id", str(i)) for i in range(3)]
    assert len({args[3] for args in processes}) == 1 and len(set(processes[0][3].split(","))) == 3
