"""The image definition installs the whole project, from the lock, on a base named by
digest, and runs as the user the manifests expect. (No Docker engine runs on CI
machines, so the build itself is not run here; these checks keep the Dockerfile in step
with pyproject, the lock files and k8s/.)"""

from __future__ import annotations

import re
import shlex
import tomllib

from tests.k8s.conftest import OVERLAYS, REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
INSTRUCTIONS = [line.strip() for line in DOCKERFILE.splitlines() if line.strip() and not line.startswith("#")]


def _packages() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]]


def _run_commands() -> list[list[str]]:
    """Every command the RUN instructions chain, as words."""
    commands: list[list[str]] = []
    for line in DOCKERFILE.replace("\\\n", " ").splitlines():
        if line.startswith("RUN "):
            lexer = shlex.shlex(line.removeprefix("RUN "), posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            commands.append([])
            for token in lexer:
                if token in {"&&", "||", ";", "|", ">", ">>"}:
                    commands.append([])
                else:
                    commands[-1].append(token)
    return [words for words in commands if words]


def _pip(words: list[str]) -> list[str] | None:
    """What follows `pip` (or `python -m pip`) in a command, None if it does not run pip."""
    for index, word in enumerate(words):
        if word.endswith("/pip") or word == "pip":
            return words[index + 1:]
    return None


def test_every_stage_is_one_python_3_11_slim_named_by_digest():
    stages = [line.split()[1] for line in INSTRUCTIONS if line.startswith("FROM ")]
    assert len(stages) == 2 and len(set(stages)) == 1  # the venv built in one runs in the other
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", stages[0]), stages[0]


def _venv_pips() -> dict[str, list[list[str]]]:
    """What pip runs in each venv (`/opt/venv`: the image's; `/opt/build`: the core's build tool)."""
    runs: dict[str, list[list[str]]] = {}
    for words in _run_commands():
        args = _pip(words)
        if args is not None:
            pip = next(word for word in words if word.endswith("/pip") or word == "pip")
            runs.setdefault(pip.removesuffix("/bin/pip"), []).append(args)
    return runs


def _locks(installs: list[list[str]]) -> dict[str, list[str]]:
    locks = {}
    for args in installs:
        if "-r" in args:
            assert "--require-hashes" in args, args
            path = args[args.index("-r") + 1]
            named = [arg for arg in args if not arg.startswith("-") and arg not in {path, ":all:"}]
            assert not named, f"packages installed by name, outside the lock: {named}"
            locks[path] = args
    return locks


def test_the_image_installs_the_lock_with_hashes_and_no_version_ranges():
    runs = _venv_pips()
    assert set(runs) == {"/opt/venv", "/opt/build"}, runs
    assert all(args[0] in {"install", "check"} for args in runs["/opt/venv"]), runs
    other = [words for words in _run_commands() if "pip" in " ".join(words) and _pip(words) is None]
    assert not other, f"pip run some other way: {other}"
    installs = [args[1:] for args in runs["/opt/venv"] if args[0] == "install"]
    assert list(_locks(installs)) == ["requirements/pip.txt", "requirements/runtime.txt"]  # pip first, then the lock
    project, core = [args for args in installs if "-r" not in args][::-1]
    assert "--no-deps" in project and "--no-build-isolation" in project  # setuptools from the lock too
    assert [arg for arg in project if not arg.startswith("-")] == ["."]
    assert "--no-deps" in core and [arg for arg in core if not arg.startswith("-")] == ["/wheels/mutagg_core-*.whl"]
    assert "COPY requirements/pip.txt requirements/runtime.txt ./requirements/" in INSTRUCTIONS
    ignore = (REPO / ".dockerignore").read_text().split()
    assert {"!requirements/pip.txt", "!requirements/runtime.txt"} <= set(ignore)


def test_the_image_builds_the_compiled_core_from_its_locks_and_carries_no_toolchain():
    """The wheel of core/ is built in the build stage by the pinned maturin (in a venv of its
    own, `--no-build-isolation`: nothing unpinned fetched) with Debian's cargo, and only the
    wheel reaches the job's venv; the runtime stage installs nothing."""
    build = _venv_pips()["/opt/build"]
    installs = [args[1:] for args in build if args[0] == "install"]
    assert list(_locks(installs)) == ["requirements/pip.txt", "requirements/maturin.txt"]
    assert len(installs) == 2
    (wheel,) = [args[1:] for args in build if args[0] == "wheel"]
    assert {"--no-deps", "--no-build-isolation"} <= set(wheel)
    assert [arg for arg in wheel if not arg.startswith("-")] == ["/wheels", "./core"]  # --wheel-dir /wheels
    _, build_stage, runtime_stage = DOCKERFILE.split("\nFROM ")
    assert "apt-get install -y --no-install-recommends cargo" in build_stage
    assert "RUN " not in runtime_stage.replace("RUN groupadd", "")  # the runtime stage: a user, no installs
    assert {"COPY requirements/maturin.txt ./requirements/", "COPY core ./core"} <= set(INSTRUCTIONS)
    ignore = (REPO / ".dockerignore").read_text().split()
    assert {"!requirements/maturin.txt", "!core/", "core/target"} <= set(ignore)
    assert ignore.index("core/target") > ignore.index("!core/")  # a local build stays out


def test_the_image_installs_every_package_of_the_project():
    copied = {line.split()[1] for line in INSTRUCTIONS if line.startswith("COPY ") and "--from" not in line}
    copied |= {name for line in INSTRUCTIONS if line.startswith("COPY pyproject") for name in line.split()[1:-1]}
    assert {"pyproject.toml", "README.md"} <= copied  # pyproject names README.md as its readme
    assert set(_packages()) <= copied
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
