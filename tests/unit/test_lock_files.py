"""The lock files are what gets installed: `make` installs requirements/dev.txt into the
venv CI tests in, the Dockerfile installs requirements/runtime.txt into the image. Each
names every dependency pyproject.toml declares, at a version within its range, for every
Python the Makefile accepts; every pin is exact and hashed; the image's pins are the pins
CI tests. (`make lock` rewrites them; these checks say when it was forgotten.)"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
RUNTIME = REPO / "requirements" / "runtime.txt"
DEV = REPO / "requirements" / "dev.txt"
PIP = REPO / "requirements" / "pip.txt"
LOCK_TOOL = REPO / "requirements" / "uv.txt"
CORE_BUILD = REPO / "requirements" / "maturin.txt"
# Linux x86_64 CPython: CI's machine and the image; 3.11 and 3.12 are what the Makefile accepts.
TARGETS = {
    version: {"python_version": version, "python_full_version": f"{version}.0", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    for version in ("3.11", "3.12")
}


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: tuple[str, ...]

    def applies(self, environment: dict[str, str]) -> bool:
        return self.marker is None or self.marker.evaluate(environment)


def read_lock(path: Path) -> list[Pin]:
    """The entries of a hashed requirements file (`name==version ; marker --hash=...`)."""
    pins = []
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement_text, *options = re.split(r"\s+(?=--)", line)
        unknown = [option for option in options if not option.startswith("--hash=")]
        assert not unknown, f"{path.name}: {requirement_text} has options other than hashes: {unknown}"
        requirement = Requirement(requirement_text)
        (specifier, *more) = requirement.specifier
        assert not more and specifier.operator == "==", f"{path.name}: {requirement_text} is not one exact pin"
        pins.append(Pin(canonicalize_name(requirement.name), Version(specifier.version), requirement.marker,
                        tuple(option.removeprefix("--hash=") for option in options)))
    return pins


def declared(*extras: str) -> list[Requirement]:
    """pyproject's dependencies, the named extras', and the build system's (the project is
    installed with --no-build-isolation, so its setuptools comes from the lock too)."""
    texts = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["build-system"]["requires"]]
    for extra in extras:
        texts += PYPROJECT["project"]["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def locked(pins: list[Pin], name: str, environment: dict[str, str]) -> list[Pin]:
    return [pin for pin in pins if pin.name == canonicalize_name(name) and pin.applies(environment)]


@pytest.mark.parametrize("path", [RUNTIME, DEV, PIP, LOCK_TOOL, CORE_BUILD], ids=lambda path: path.name)
def test_every_pin_is_exact_and_hashed(path):
    pins = read_lock(path)
    assert pins
    for pin in pins:
        assert pin.hashes, f"{path.name}: {pin.name} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", digest) for digest in pin.hashes), pin
    for environment in TARGETS.values():
        applying = [pin.name for pin in pins if pin.applies(environment)]
        assert len(applying) == len(set(applying)), f"{path.name}: a package pinned twice for one interpreter"


@pytest.mark.parametrize(("path", "extras"), [(RUNTIME, ()), (DEV, ("dev",))], ids=["runtime", "dev"])
@pytest.mark.parametrize("python", sorted(TARGETS))
def test_every_declared_dependency_is_locked_within_its_range(path, extras, python):
    environment = TARGETS[python]
    pins = read_lock(path)
    for requirement in declared(*extras):
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        candidates = locked(pins, requirement.name, environment)
        assert candidates, f"{requirement} is not in {path.name} for Python {python}: run `make lock`"
        (pin,) = candidates
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{path.name} pins {pin.name}=={pin.version}, outside pyproject's {requirement}: run `make lock`")


@pytest.mark.parametrize(("path", "extras"), [(RUNTIME, ()), (DEV, ("dev",))], ids=["runtime", "dev"])
def test_what_the_declared_extras_add_is_locked_too(path, extras):
    """`psycopg[binary]` asks for psycopg-binary: read from the installed distribution's
    metadata (the venv is installed from this lock, so it is the locked version's)."""
    environment = TARGETS["3.11"]
    pins = read_lock(path)
    checked = 0
    for requirement in declared(*extras):
        if not requirement.extras:
            continue
        (pin,) = locked(pins, requirement.name, environment)
        distribution = metadata.distribution(requirement.name)
        if Version(distribution.version) != pin.version:
            pytest.skip(f"this venv has {pin.name} {distribution.version}, the lock {pin.version}: run `make`")
        for text in distribution.requires or []:
            added = Requirement(text)
            if not added.marker or added.marker.evaluate({**environment, "extra": ""}):
                continue  # not brought by an extra (pip check covers those in the installed venv)
            if not any(added.marker.evaluate({**environment, "extra": extra}) for extra in requirement.extras):
                continue
            candidates = locked(pins, added.name, environment)
            assert candidates, f"{requirement} needs {added}, which {path.name} lacks: run `make lock`"
            assert added.specifier.contains(candidates[0].version, prereleases=True), (added, candidates[0])
            checked += 1
    assert checked  # psycopg[binary] and moto[server] add packages


def test_the_image_installs_the_pins_ci_tests():
    dev = set(read_lock(DEV))
    missing = [pin for pin in read_lock(RUNTIME) if pin not in dev]
    assert not missing, f"runtime.txt pins that dev.txt does not (same version, marker and hashes): {missing}"


def test_the_venv_ci_tests_in_is_installed_from_the_lock():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^LOCK := requirements/dev\.txt$", makefile, re.MULTILINE)
    (prerequisites,) = re.findall(r"^\$\(STAMP\):(.*)$", makefile, re.MULTILINE)
    assert {"$(LOCK)", "$(PIP_LOCK)"} <= set(prerequisites.split())  # a new lock reinstalls the venv
    (recipe,) = re.findall(r"^\$\(STAMP\):.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    installs = [line for line in recipe.splitlines() if "pip install" in line]
    flags = re.search(r"^PIP_LOCKED := (.*)$", makefile, re.MULTILINE).group(1).split()
    assert "--require-hashes" in flags
    assert re.search(r"^PIP_LOCK := requirements/pip\.txt$", makefile, re.MULTILINE)
    assert [line.split()[-3:] for line in installs[:2]] == [["$(PIP_LOCKED)", "-r", "$(PIP_LOCK)"],
                                                            ["$(PIP_LOCKED)", "-r", "$(LOCK)"]]
    assert all("--no-deps" in line for line in installs[2:])  # the project itself, nothing resolved
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_the_core_is_built_by_its_locked_tool_and_kept_in_the_venv():
    """core/pyproject.toml's build tool is pinned in maturin.txt; the venv gets the core's wheel
    (rebuilt when core/ changes), and the step that drops what the lock does not name spares it."""
    core = tomllib.loads((REPO / "core" / "pyproject.toml").read_text())
    pins = read_lock(CORE_BUILD)
    for text in core["build-system"]["requires"]:
        (pin,) = locked(pins, Requirement(text).name, TARGETS["3.11"])
        assert Requirement(text).specifier.contains(pin.version), f"maturin.txt pins {pin}: run `make lock`"
    makefile = (REPO / "Makefile").read_text()
    (prerequisites,) = re.findall(r"^\$\(STAMP\):(.*)$", makefile, re.MULTILINE)
    assert {"$(CORE_BUILD_LOCK)", "$(CORE_SOURCES)", "core/wheel.sh"} <= set(prerequisites.split())
    (recipe,) = re.findall(r"^\$\(STAMP\):.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    (uninstall,) = [line for line in recipe.splitlines() if "pip uninstall" in line]
    assert "-e mutagg-core" in uninstall
    assert recipe.index("core/wheel.sh") > recipe.index("pip uninstall")
