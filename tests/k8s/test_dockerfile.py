"""The image definition installs the whole project and runs as the user the
manifests expect. (No Docker engine runs on CI machines, so the build itself is
not run here; these checks keep the Dockerfile in step with pyproject and k8s/.)"""

from __future__ import annotations

import re
import tomllib

from tests.k8s.conftest import OVERLAYS, REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
INSTRUCTIONS = [line.strip() for line in DOCKERFILE.splitlines() if line.strip() and not line.startswith("#")]


def _packages() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]]


def test_every_stage_is_python_3_11_slim():
    stages = [line.split()[1] for line in INSTRUCTIONS if line.startswith("FROM ")]
    assert stages and all(image == "python:3.11-slim" for image in stages)


def test_the_image_installs_every_package_of_the_project():
    copied = {line.split()[1] for line in INSTRUCTIONS if line.startswith("COPY ") and "--from" not in line}
    copied |= {name for line in INSTRUCTIONS if line.startswith("COPY pyproject") for name in line.split()[1:-1]}
    assert {"pyproject.toml", "README.md"} <= copied  # pyproject names README.md as its readme
    assert set(_packages()) <= copied
    assert re.search(r"pip install --no-deps \.", DOCKERFILE)
    ignore = (REPO / ".dockerignore").read_text().split()
    for name in ["pyproject.toml", "README.md", *_packages()]:
        assert f"!{name}" in ignore or f"!{name}/" in ignore, f".dockerignore drops {name}"


def test_the_image_runs_as_the_non_root_user_the_pods_expect(rendered):
    users = [line.split()[1] for line in INSTRUCTIONS if line.startswith("USER ")]
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0  # numeric: the kubelet can check runAsNonRoot
    for overlay in OVERLAYS:
        (job,) = [r for r in rendered[overlay] if r["kind"] == "Job"]
        context = job["spec"]["template"]["spec"]["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid or uid))
    assert INSTRUCTIONS[-2:] == ['ENTRYPOINT ["mutagg"]', 'CMD ["--help"]']
