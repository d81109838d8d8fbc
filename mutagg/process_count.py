"""How many processes the job's cluster runs when an autoscaler asks (issue 21 part 4): pure rules,
no I/O. The autoscaler (KEDA, from the lag; k8s/overlays/prod-autoscale) writes a desired count;
`decide` says whether the running cluster changes to it now. `mutagg/rescaler.py` does what it says.

A change of the count stops the whole cluster at a checkpoint and starts it again from the
recovery partitions (what tests/integration/test_rescale.py proves safe). That costs a restart,
so the count moves only within the configured bounds, only to counts the shard placement spreads
evenly, and not again before the cool-down since the cluster started.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from dataflows.shards import PLACEMENT_MODULUS
from schemas.errors import ConfigError


@dataclass(frozen=True)
class ScaleBounds:
    """What the cluster may be scaled between, and what it must fit."""

    min_processes: int
    max_processes: int
    workers: int
    """Workers per process (MUTAGG_WORKERS)."""
    shards: int
    """MUTAGG_SHARDS: fixed for the life of the recovery snapshots, so the same for every count."""
    recovery_partitions: int
    """MUTAGG_RECOVERY_PARTITIONS: created once, at least the largest worker count ever run."""


def check_bounds(bounds: ScaleBounds) -> None:
    """Refuse, with the setting to change, any bounds under which some count in range would run
    badly: a worker without a shard, shards spread unevenly, too few recovery partitions. Raises
    ConfigError (exit 2)."""
    low, high, workers, shards = bounds.min_processes, bounds.max_processes, bounds.workers, bounds.shards
    if workers < 1:
        raise ConfigError(f"MUTAGG_WORKERS must be at least 1, got {workers}")
    if not 1 <= low <= high:
        raise ConfigError(f"autoscaling needs 1 <= MUTAGG_SCALE_MIN_PROCESSES ({low}) "
                          f"<= MUTAGG_SCALE_MAX_PROCESSES ({high})")
    if shards < 2:
        raise ConfigError("autoscaling needs MUTAGG_SHARDS > 1: with one shard a single apply step commits "
                          "everything, and more processes only read for it (README \"Scale\")")
    if high * workers > shards:
        raise ConfigError(f"MUTAGG_SCALE_MAX_PROCESSES={high} x MUTAGG_WORKERS={workers} is more workers than "
                          f"the {shards} shards (MUTAGG_SHARDS) can use: a worker without a shard commits nothing. "
                          f"Lower the maximum to {shards // workers} or fewer")
    uneven = [n for n in range(low, high + 1)
              if shards % (n * workers) or PLACEMENT_MODULUS % (n * workers)]
    if uneven:
        raise ConfigError(f"{uneven[0]} process(es) x {workers} worker(s) do not divide the {shards} shards "
                          f"(MUTAGG_SHARDS) evenly, or not {PLACEMENT_MODULUS} (dataflows/shards.py places shard i "
                          f"on worker i % W only for such W): every count from MUTAGG_SCALE_MIN_PROCESSES to "
                          f"MUTAGG_SCALE_MAX_PROCESSES must. Counts that do: {even_counts(shards, workers)}")
    if high * workers > bounds.recovery_partitions:
        raise ConfigError(f"MUTAGG_RECOVERY_PARTITIONS={bounds.recovery_partitions} is fewer than the "
                          f"{high * workers} workers of MUTAGG_SCALE_MAX_PROCESSES={high}")


def even_counts(shards: int, workers: int) -> list[int]:
    """The process counts whose workers divide both the shards and the placement modulus."""
    return [n for n in range(1, shards // workers + 1)
            if not shards % (n * workers) and not PLACEMENT_MODULUS % (n * workers)]


class Verdict(Enum):
    KEEP = "keep"
    RESCALE = "rescale"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    processes: int
    """The count to run: the current one for KEEP."""
    reason: str


def decide(current: int, desired: int | None, bounds: ScaleBounds, running_s: float, cooldown_s: float) -> Decision:
    """Whether a cluster of `current` processes, formed `running_s` seconds ago, changes to the
    autoscaler's `desired` count (None: unknown, e.g. the target could not be read) now.
    `desired` is clamped to the bounds (`check_bounds` has made every count in them even);
    a change waits until the cluster has run `cooldown_s`, whichever way it goes, since each
    change is a stop and a start."""
    if desired is None:
        return Decision(Verdict.KEEP, current, "no desired count")
    target = min(max(desired, bounds.min_processes), bounds.max_processes)
    clamped = f" ({desired} clamped to {bounds.min_processes}..{bounds.max_processes})" if target != desired else ""
    if target == current:
        return Decision(Verdict.KEEP, current, f"running the desired count {target}{clamped}")
    if running_s < cooldown_s:
        return Decision(Verdict.KEEP, current, f"cooling down: {target}{clamped} wanted, "
                                               f"{cooldown_s - running_s:.0f} s left")
    return Decision(Verdict.RESCALE, target, f"{current} -> {target} process(es){clamped}")
