"""What a Job's `podFailurePolicy` does with a failed pod, as the Job controller decides it
(kubernetes pkg/controller/job/pod_failure_policy.go, batch/v1 API reference):

- rules are tried in order and the first that matches decides; none matching: `Count`;
- `onExitCodes` looks at terminated containers (regular ones first, then init containers),
  only the one named by `containerName` if set, and never at an exit code 0; `In` matches a
  code in `values`, `NotIn` a code not in them;
- `onPodConditions` matches a pod condition with that type and status.

The API server refuses what the controller never sees, and so does `validate`: `values`
sorted and unique, no 0 with `In`, `FailIndex` only with `backoffLimitPerIndex`, which
itself needs `completionMode: Indexed`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

ACTIONS = ("FailJob", "FailIndex", "Ignore", "Count")


def validate(job_spec: Mapping) -> None:
    """AssertionError where the API server would reject the Job's failure handling."""
    if "backoffLimitPerIndex" in job_spec or "maxFailedIndexes" in job_spec:
        assert job_spec.get("completionMode") == "Indexed", "backoffLimitPerIndex needs completionMode: Indexed"
        assert "backoffLimitPerIndex" in job_spec, "maxFailedIndexes needs backoffLimitPerIndex"
    if "maxFailedIndexes" in job_spec:
        assert 0 <= job_spec["maxFailedIndexes"] <= job_spec.get("completions", 1)
    for rule in job_spec.get("podFailurePolicy", {}).get("rules", []):
        assert rule["action"] in ACTIONS, rule
        assert rule["action"] != "FailIndex" or "backoffLimitPerIndex" in job_spec, \
            "FailIndex needs backoffLimitPerIndex"
        assert ("onExitCodes" in rule) != ("onPodConditions" in rule), f"exactly one requirement: {rule}"
        if "onExitCodes" in rule:
            requirement = rule["onExitCodes"]
            values = requirement["values"]
            assert requirement["operator"] in ("In", "NotIn"), requirement
            assert values == sorted(set(values)) and 1 <= len(values) <= 255, f"values sorted and unique: {values}"
            assert requirement["operator"] == "NotIn" or 0 not in values, "0 cannot be used with In"


def action(
    job_spec: Mapping,
    exit_codes: Mapping[str, int],
    init_exit_codes: Mapping[str, int] | None = None,
    conditions: Iterable[tuple[str, str]] = (),
) -> str:
    """The action for a failed pod whose containers ended with `exit_codes` (name -> code;
    `init_exit_codes` likewise) and which has `conditions` ((type, status) pairs)."""
    validate(job_spec)
    conditions = set(conditions)
    for rule in job_spec.get("podFailurePolicy", {}).get("rules", []):
        if "onExitCodes" in rule:
            if _exit_codes_match(rule["onExitCodes"], exit_codes, init_exit_codes or {}):
                return rule["action"]
        elif any((pattern["type"], pattern["status"]) in conditions for pattern in rule["onPodConditions"]):
            return rule["action"]
    return "Count"


def _exit_codes_match(requirement: Mapping, exit_codes: Mapping[str, int], init_exit_codes: Mapping[str, int]) -> bool:
    name = requirement.get("containerName")
    for container, code in [*exit_codes.items(), *init_exit_codes.items()]:
        if (name is None or name == container) and code != 0:
            if (code in requirement["values"]) == (requirement["operator"] == "In"):
                return True
    return False


INTENDED = {
    0: None,  # `--until-idle` drained: the index completes (a streaming run never exits 0, run-cluster.sh)
    1: "Count",  # an uncaught exception: a bug
    2: "FailJob",  # settings, registry, credentials, unmigrated schema
    3: "Ignore",  # Kafka or PostgreSQL unreachable past MUTAGG_SERVICE_DEADLINE_S
    4: "Count",  # BatchFailed: a bug
    5: "FailJob",  # InputGap: an operator decides
    7: "Ignore",  # DatabaseBehind: the restart redoes what the promoted standby lost
    137: "Count",  # SIGKILL: OOM kill, or a stop past the grace period
    139: "Count",  # SIGSEGV
    143: "Ignore",  # SIGTERM: pod deleted, liveness restart, or past MUTAGG_STOP_DEADLINE_S
}
"""The README's exit-code table: `mutagg run`'s exit code (through run-cluster.sh) -> the action."""


MIGRATE_INTENDED = {
    0: None,  # migrated, topics created and as the settings say: the Job completes
    1: "Count",  # an uncaught exception
    2: "FailJob",  # a column type change refused, rejected credentials, a job role that is missing or unsafe
    3: "Count",  # Kafka or PostgreSQL unreachable: tried again after the Job's backoff, a few times
    6: "FailJob",  # `topics check`: topics differ from the settings; an operator fixes them
    8: "Count",  # MigrationBlocked: locks held through every attempt; tried again later, a few times
    137: "Count",
}
"""The README's table for the migrate Job (k8s/components/migrate): its steps' exit code -> the action."""
