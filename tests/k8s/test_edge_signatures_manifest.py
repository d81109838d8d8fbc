"""Production checks edge signatures (README "Edge signatures"): the dataflow container of the
prod overlay reads the master key from a mounted Secret that no manifest defines; dev and the
base accept unsigned messages (local runs, rollouts), and no other container holds the key."""

from __future__ import annotations

import pytest

from tests.k8s.test_manifests import _containers, _main, _pod, _settings, _volume_for

VARIABLE = "MUTAGG_EDGE_MASTER_KEY_FILE"


def test_the_prod_dataflow_reads_the_master_key_from_a_secret_created_out_of_band(rendered):
    resources = rendered["prod"]
    pod = _pod(resources)
    main = _main(pod)
    env = {e["name"]: e for e in main["env"]}
    volume, inside = _volume_for(pod, main, env[VARIABLE]["value"])
    assert volume["secret"]["secretName"] == "mutagg-edge-master-key" and inside == "master-key"
    assert not [r for r in resources if r["kind"] == "Secret"]  # its value is never in git
    others = [c for c in _containers(pod) if c is not main]
    assert others and all(VARIABLE not in {e["name"] for e in c.get("env", [])} for c in others)
    assert VARIABLE not in _settings(resources)  # else every init container would need the key too


@pytest.mark.parametrize("target", ["base", "dev"])
def test_without_the_prod_overlay_unsigned_messages_are_accepted(rendered, target):
    resources = rendered[target]
    assert VARIABLE not in _settings(resources)
    assert all(VARIABLE not in {e["name"] for e in c.get("env", [])} for c in _containers(_pod(resources)))
