"""The job role's privileges stay in step with the tables and the SQL the code runs."""

from __future__ import annotations

import re
from pathlib import Path

from mutagg.roles import CORE_TABLE_PRIVILEGES, ENTITY_TABLE_PRIVILEGES, job_privileges
from mutagg.settings import DEFAULT_REGISTRY
from operators.strategies import CUSTOM_STRATEGIES
from schemas import ddl
from schemas.registry import load_registry

REPO = Path(__file__).resolve().parents[2]
# Code that runs with the job's credentials (migrations run as the owner).
JOB_CODE = [
    path for folder in ("sinks", "sources", "dataflows", "mutagg") for path in sorted((REPO / folder).glob("*.py"))
    if path.name not in {"migrate.py", "roles.py", "demo.py"}
]
WRITES = [
    (re.compile(r"\bINSERT\s+INTO\s+(\w+)"), "INSERT"),
    (re.compile(r"\bUPDATE\s+(?!SET\b)(\w+)\s+(?:\w+\s+)?SET\b"), "UPDATE"),
    (re.compile(r"\bDELETE\s+FROM\s+(\w+)"), "DELETE"),
    (re.compile(r"\bINSERT\s+INTO\s+(\w+)(?:(?!INSERT).){0,400}?\bDO\s+UPDATE\b", re.DOTALL), "UPDATE"),  # upsert
    (re.compile(r"copy_frame\(\s*cursor,\s*sql\.Identifier\(\"(\w+)\"\)"), "INSERT"),
]


def _registry():
    return load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)


def test_every_core_table_has_its_privileges_declared():
    created = set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl.core_tables().as_string(None)))
    assert created == set(CORE_TABLE_PRIVILEGES), "declare the job's privileges in mutagg/roles.py"


def test_every_write_in_the_job_code_is_granted():
    privileges = job_privileges(_registry())
    found = []
    for path in JOB_CODE:
        text = path.read_text()
        for pattern, privilege in WRITES:
            for table in pattern.findall(text):
                if table in privileges:
                    found.append((path.name, privilege, table))
                    assert privilege in privileges[table], f"{path.name}: {privilege} on {table} is not granted"
    assert {("ledger.py", "DELETE", "mutation_log"), ("ledger.py", "UPDATE", "conflicts"),
            ("ledger.py", "UPDATE", "source_offsets")} <= set(found)


def test_no_ddl_or_truncate_and_entity_tables_are_never_deleted_from():
    privileges = job_privileges(_registry())
    assert all(set(granted) <= {"SELECT", "INSERT", "UPDATE", "DELETE"} for granted in privileges.values())
    assert ENTITY_TABLE_PRIVILEGES == ("SELECT", "INSERT", "UPDATE")
    assert "UPDATE" not in privileges["mutation_log"]  # the ledger is never rewritten in place
