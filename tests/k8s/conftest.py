"""Renders k8s/ with a pinned kustomize, built once from the Go module proxy by the
repo's own script (k8s/tools/kustomize.sh) and cached in ~/.cache/mutation-aggregator."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE_SCRIPT = REPO / "k8s" / "tools" / "kustomize.sh"
OVERLAYS = ("dev", "prod", "prod-autoscale")
PRODUCTION = ("prod", "prod-autoscale")
"""Overlays whose credentials are created out of band and whose image comes from a registry."""
MIGRATE_OVERLAYS = {"dev-migrate": "dev", "prod-migrate": "prod"}
"""Each overlay's upgrade step: the migrate Job (k8s/components/migrate) in that overlay's rendering."""


@pytest.fixture(scope="session")
def kustomize() -> Path:
    """The kustomize binary (a first build from source takes a minute or two)."""
    result = subprocess.run(["bash", str(KUSTOMIZE_SCRIPT), "--path"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"building kustomize failed:\n{result.stderr[-4000:]}"
    return Path(result.stdout.strip())


def render(kustomize: Path, target: str) -> list[dict]:
    directory = REPO / "k8s" / ("base" if target == "base" else f"overlays/{target}")
    result = subprocess.run([str(kustomize), "build", str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kustomize build {directory} failed:\n{result.stderr}"
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="session")
def rendered(kustomize: Path) -> dict[str, list[dict]]:
    """Every overlay (the base, and each overlay's migrate step) rendered: target -> list of resources."""
    return {target: render(kustomize, target) for target in ("base", *OVERLAYS, *MIGRATE_OVERLAYS)}
