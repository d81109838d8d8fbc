"""The pod scripts, as rendered into the ConfigMap, run under sh: the cluster
addresses and process id a pod starts with, and recovery partitions created once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mutagg.cli import _parser
from tests.k8s.conftest import REPO

VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def scripts(rendered, tmp_path) -> dict[str, Path]:
    (config_map,) = [r for r in rendered["prod"]
                     if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("mutagg-scripts")]
    paths = {}
    for name, text in config_map["data"].items():
        paths[name] = tmp_path / name
        paths[name].write_text(text)
    assert (REPO / "k8s/base/scripts/run-cluster.sh").read_text() == config_map["data"]["run-cluster.sh"]
    return paths


def _fakes(tmp_path: Path, resolves: bool = True) -> Path:
    """A `mutagg` that only logs its arguments, and a `getent` that resolves or not."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "mutagg").write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "$FAKE_LOG"\n')
    (bin_dir / "getent").write_text(f"#!/bin/sh\nexit {0 if resolves else 2}\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


def _run(script: Path, env: dict[str, str], *args: str, path: Path | None = None, timeout: float = 30):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MUTAGG_", "JOB_"))}
    clean["PATH"] = f"{path}:{clean['PATH']}" if path else clean["PATH"]
    return subprocess.run(["sh", str(script), *args], env={**clean, **env}, capture_output=True, text=True,
                          timeout=timeout)


CLUSTER = {"JOB_NAME": "mutagg", "MUTAGG_PROCESSES": "3", "MUTAGG_WORKERS": "4",
           "MUTAGG_CLUSTER_SERVICE": "mutagg-cluster", "MUTAGG_CLUSTER_PORT": "9500"}


@pytest.mark.parametrize("index", [0, 1, 2])
def test_each_pod_starts_its_process_of_one_cluster(scripts, tmp_path, index):
    log = tmp_path / "calls.log"
    result = _run(scripts["run-cluster.sh"], {**CLUSTER, "JOB_COMPLETION_INDEX": str(index), "FAKE_LOG": str(log)},
                  "--until-idle", path=_fakes(tmp_path))
    assert result.returncode == 0, result.stderr
    (call,) = log.read_text().splitlines()
    args = _parser().parse_args(call.split())  # the real CLI accepts what the pod runs
    assert (args.command, args.workers, args.process_id, args.until_idle) == ("run", 4, index, True)
    assert args.addresses.split(",") == [f"mutagg-{i}.mutagg-cluster:9500" for i in range(3)]


def test_a_single_process_needs_no_cluster_addresses(scripts, tmp_path):
    log = tmp_path / "calls.log"
    env = {"JOB_COMPLETION_INDEX": "0", "MUTAGG_PROCESSES": "1", "MUTAGG_WORKERS": "2", "FAKE_LOG": str(log)}
    result = _run(scripts["run-cluster.sh"], env, "--until-idle", path=_fakes(tmp_path))
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["run --workers 2 --until-idle"]


def _streaming_fake(tmp_path: Path, exit_code: int = 0) -> Path:
    """A `mutagg run` that streams until SIGTERM, then finishes its batch and exits."""
    bin_dir = _fakes(tmp_path)
    (bin_dir / "mutagg").write_text(
        '#!/bin/sh\nprintf "%s\\n" "$*" >> "$FAKE_LOG"\n'
        f'trap \'echo stopped >> "$FAKE_LOG"; exit {exit_code}\' TERM\n'
        "while :; do sleep 0.05; done\n"
    )
    return bin_dir


@pytest.mark.parametrize(("dataflow_exit", "pod_exit"), [(0, 143), (3, 3)])
def test_a_stopped_streaming_process_never_reports_success_to_the_job(scripts, tmp_path, dataflow_exit, pod_exit):
    """An index whose pod exits 0 is complete for an Indexed Job and never restarted."""
    log = tmp_path / "calls.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MUTAGG_", "JOB_"))}
    env = {**clean, **CLUSTER, "MUTAGG_PROCESSES": "1", "JOB_COMPLETION_INDEX": "0", "FAKE_LOG": str(log),
           "PATH": f"{_streaming_fake(tmp_path, dataflow_exit)}:{clean['PATH']}"}
    pod = subprocess.Popen(["sh", str(scripts["run-cluster.sh"])], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not (log.exists() and log.read_text()):
            assert time.monotonic() < deadline, "the dataflow did not start"
            time.sleep(0.01)
        pod.send_signal(signal.SIGTERM)  # what the kubelet sends on a drain or eviction
        assert pod.wait(10) == pod_exit
    finally:
        pod.kill()
    assert log.read_text().splitlines() == ["run --workers 4", "stopped"]  # the signal reached the dataflow


def test_a_pod_outside_the_configured_cluster_refuses_to_start(scripts, tmp_path):
    log = tmp_path / "calls.log"
    result = _run(scripts["run-cluster.sh"], {**CLUSTER, "JOB_COMPLETION_INDEX": "3", "FAKE_LOG": str(log)},
                  path=_fakes(tmp_path))
    assert result.returncode == 2 and "MUTAGG_PROCESSES=3" in result.stderr
    assert not log.exists()


def test_a_pod_whose_name_never_resolves_gives_up_in_bounded_time(scripts, tmp_path):
    log = tmp_path / "calls.log"
    env = {**CLUSTER, "JOB_COMPLETION_INDEX": "1", "FAKE_LOG": str(log), "MUTAGG_DNS_WAIT_S": "1"}
    result = _run(scripts["run-cluster.sh"], env, path=_fakes(tmp_path, resolves=False), timeout=20)
    assert result.returncode == 3 and "mutagg-1.mutagg-cluster does not resolve" in result.stderr
    assert not log.exists()


def test_recovery_partitions_are_created_once_and_then_kept(scripts, tmp_path):
    volume = tmp_path / "volume"
    (volume / "recovery" / "lost+found").mkdir(parents=True)  # a fresh ext4 volume is not empty
    env = {"MUTAGG_RECOVERY_DIR": str(volume / "recovery"), "MUTAGG_RECOVERY_PARTITIONS": "4",
           "JOB_COMPLETION_INDEX": "0"}
    first = _run(scripts["recovery-init.sh"], env, path=VENV_BIN, timeout=120)  # the real `mutagg recovery init`
    assert first.returncode == 0, first.stderr
    parts = sorted(p.name for p in (volume / "recovery").glob("part-*.sqlite3"))
    assert parts == [f"part-{i}.sqlite3" for i in range(4)]
    stamps = {p: p.stat().st_mtime_ns for p in (volume / "recovery").iterdir()}
    assert not (volume / "recovery" / ".staging").exists()

    again = _run(scripts["recovery-init.sh"], {**env, "MUTAGG_RECOVERY_PARTITIONS": "8"}, path=VENV_BIN)
    assert again.returncode == 0 and "keeping them" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (volume / "recovery").iterdir()} == stamps


def test_other_processes_wait_for_process_zero_with_a_deadline(scripts, tmp_path):
    recovery = tmp_path / "recovery"
    env = {"MUTAGG_RECOVERY_DIR": str(recovery), "MUTAGG_RECOVERY_PARTITIONS": "2", "JOB_COMPLETION_INDEX": "1",
           "MUTAGG_RECOVERY_WAIT_S": "1", "FAKE_LOG": str(tmp_path / "calls.log")}
    waited = _run(scripts["recovery-init.sh"], env, path=_fakes(tmp_path), timeout=20)
    assert waited.returncode == 1 and "no recovery partitions" in waited.stderr
    (recovery / ".staging").mkdir()  # process 0 is moving its new set in
    for i in range(2):
        (recovery / f"part-{i}.sqlite3").touch()
    still = _run(scripts["recovery-init.sh"], env, path=_fakes(tmp_path), timeout=20)
    assert still.returncode == 1
    (recovery / ".staging").rmdir()
    ready = _run(scripts["recovery-init.sh"], env, path=_fakes(tmp_path))
    assert ready.returncode == 0, ready.stderr
    assert not (tmp_path / "calls.log").exists()  # only process 0 ever creates partitions


def _scaling_fake(tmp_path: Path, processes: int) -> Path:
    """A `mutagg` whose `scale join` says the Job now runs `processes` processes."""
    bin_dir = _fakes(tmp_path)
    (bin_dir / "mutagg").write_text(
        '#!/bin/sh\nprintf "%s\\n" "$*" >> "$FAKE_LOG"\n'
        f'if [ "$1" = scale ]; then echo {processes}; fi\n'
    )
    return bin_dir


@pytest.mark.parametrize(("processes", "index"), [(1, 0), (2, 0), (2, 1), (3, 2)])
def test_with_autoscaling_the_count_comes_from_the_job_once_the_old_cluster_stopped(scripts, tmp_path, processes,
                                                                                     index):
    log = tmp_path / "calls.log"
    env = {**CLUSTER, "MUTAGG_PROCESSES": "1", "MUTAGG_WORKERS": "2", "MUTAGG_SCALE_TARGET": "mutagg",
           "POD_NAME": f"mutagg-{index}-abcde", "JOB_COMPLETION_INDEX": str(index), "FAKE_LOG": str(log)}
    result = _run(scripts["run-cluster.sh"], env, "--until-idle", path=_scaling_fake(tmp_path, processes))
    assert result.returncode == 0, result.stderr
    join, call = log.read_text().splitlines()
    assert join == f"scale join --pod mutagg-{index}-abcde"
    args = _parser().parse_args(call.split())
    assert (args.command, args.workers, args.process_id) == ("run", 2, None if processes == 1 else index)
    if processes > 1:
        assert args.addresses.split(",") == [f"mutagg-{i}.mutagg-cluster:9500" for i in range(processes)]
    assert _parser().parse_args(join.split()).pod == f"mutagg-{index}-abcde"


def test_an_index_a_rescale_removed_stops_without_counting_against_the_job(scripts, tmp_path):
    log = tmp_path / "calls.log"
    env = {**CLUSTER, "MUTAGG_SCALE_TARGET": "mutagg", "POD_NAME": "mutagg-2-abcde", "JOB_COMPLETION_INDEX": "2",
           "FAKE_LOG": str(log)}
    result = _run(scripts["run-cluster.sh"], env, path=_scaling_fake(tmp_path, 2))
    assert result.returncode == 143 and "beyond the Job's 2 process(es)" in result.stderr
    assert log.read_text().splitlines() == ["scale join --pod mutagg-2-abcde"]  # no dataflow started
