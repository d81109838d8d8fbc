"""The test suite's own guarantees: `-m integration` selects exactly the tests that
need the real services, and no test writes the checkout's audit/ directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mutagg.settings import load_settings
from tests.conftest import CHECKOUT_AUDIT

REPO = Path(__file__).resolve().parents[2]


def _collected(*options: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "--continue-on-collection-errors", *options, "tests/integration", "tests/unit/test_bench_cpu.py"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    return {line for line in result.stdout.splitlines() if "::" in line}


def test_the_integration_mark_selects_every_integration_test_and_nothing_else():
    selected = _collected("-m", "integration")
    deselected = _collected("-m", "not integration")
    integration = {node for node in selected | deselected if node.startswith("tests/integration/")}
    assert len(integration) > 50  # every module of tests/integration/ was collected
    assert selected == integration
    assert deselected and all(node.startswith("tests/unit/") for node in deselected)


def test_the_session_audit_uri_is_outside_the_checkout():
    audit = Path(load_settings().audit_uri).resolve()
    assert audit.is_dir() and REPO not in audit.parents, audit
    assert os.environ["MUTAGG_AUDIT_URI"] == str(audit)
    assert CHECKOUT_AUDIT == REPO / "audit"
