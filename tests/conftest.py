from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Shared machines are noisy: no per-example deadline, and generation may be slow.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")

INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration/ needs the real services: mark it `integration`, so
    `-m "not integration"` runs without them (a `pytestmark` in a conftest marks nothing)."""
    for item in items:
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.integration)


CHECKOUT_AUDIT = Path(__file__).resolve().parent.parent / "audit"
"""The default `MUTAGG_AUDIT_URI` of a checkout: where `make demo` leaves the analysts' data set."""


def _audit_files() -> dict[str, tuple[int, int]]:
    if not CHECKOUT_AUDIT.is_dir():
        return {}
    return {
        str(path.relative_to(CHECKOUT_AUDIT)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in CHECKOUT_AUDIT.rglob("*") if path.is_file()
    }


@pytest.fixture(scope="session", autouse=True)
def audit_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No test writes the checkout's audit/ (test rows would mix with a demo's): the session's
    default audit URI is a temporary directory, and a session that changed audit/ anyway fails."""
    before = _audit_files()
    directory = tmp_path_factory.mktemp("session-audit")
    environment = pytest.MonkeyPatch()
    environment.setenv("MUTAGG_AUDIT_URI", str(directory))
    yield directory
    environment.undo()
    after = _audit_files()
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"tests wrote into {CHECKOUT_AUDIT}: {changed[:10]}"
