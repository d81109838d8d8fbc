"""Every command on an unmigrated database says so in one line naming `mutagg migrate`,
every command takes the schema from MUTAGG_SCHEMA, and the demo says how to see its results."""

from __future__ import annotations

import shlex
import subprocess
import sys
import uuid

import psycopg
import pytest

from mutagg.settings import Settings, with_overrides
from tests.integration.conftest import delete_topics, drop_schema, new_schema, query, settings_env

COMMANDS = [
    ("status",), ("conflicts", "list"), ("conflicts", "show", "c_x"), ("dlq", "replay", "--dry-run"),
    ("audit", "export", "--since", "2026-12-01"), ("roles", "check", "--role", "postgres"), ("run", "--until-idle"),
]


def cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mutagg.cli", *args], env=settings_env(settings, **env),
                          capture_output=True, text=True, timeout=120)


def says_migrate_in_one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "mutagg migrate" in lines[0] and lines[0].startswith("mutagg: NotMigrated: "), lines[0]
    return lines[0]


@pytest.fixture
def unmigrated(settings: Settings, base_settings: Settings):
    schema = f"u_{uuid.uuid4().hex[:10]}"
    yield new_schema(with_overrides(settings, database_url=base_settings.database_url), schema, migrated=False)
    drop_schema(base_settings, schema)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_command_on_an_unmigrated_schema_says_so_in_one_line(unmigrated, command):
    assert "has no mutagg tables" in says_migrate_in_one_line(cli(unmigrated, *command, MUTAGG_LOG_LEVEL="INFO"))


def test_a_partly_migrated_schema_is_still_one_line(settings):
    with psycopg.connect(settings.database_url) as connection:
        connection.execute("DROP TABLE conflicts")  # what no up-front check looks at
    line = says_migrate_in_one_line(cli(settings, "conflicts", "list"))
    assert 'relation "conflicts" does not exist' in line


def test_mutagg_schema_selects_the_schema_of_every_command(settings, base_settings):
    schema = f"s_{uuid.uuid4().hex[:10]}"  # does not exist yet: `mutagg migrate` creates it
    plain = with_overrides(settings, database_url=base_settings.database_url)
    try:
        line = says_migrate_in_one_line(cli(plain, "status", MUTAGG_SCHEMA=schema))
        assert "(no such schema)" in line and schema in line
        assert cli(plain, "migrate", MUTAGG_SCHEMA=schema).returncode == 0
        assert query(plain, "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s "
                            "AND table_name = 'mutation_log'", (schema,)) == [(1,)]
        for command in (("status",), ("--schema", schema, "status"), ("conflicts", "list")):
            result = cli(plain, *command, MUTAGG_SCHEMA=schema)
            assert result.returncode == 0, result.stderr[-3000:]
        assert cli(plain, "run", "--until-idle", MUTAGG_SCHEMA=schema).returncode == 0
    finally:
        drop_schema(base_settings, schema)


def test_after_the_demo_the_command_it_prints_shows_its_results(settings, base_settings):
    plain = with_overrides(settings, database_url=base_settings.database_url)
    demo = cli(plain, "demo", "--mutations", "300", "--no-services")
    try:
        assert demo.returncode == 0, demo.stderr[-3000:]
        last = demo.stdout.strip().splitlines()[-1]
        assert last.startswith("See the results again with: MUTAGG_SCHEMA=demo ")
        variables, program = shlex.split(last.split(": ", 1)[1])[:-2], shlex.split(last)[-2:]
        assert program[-1] == "status" and program[0].endswith("mutagg")
        shown = cli(plain, "status", **dict(v.split("=", 1) for v in variables))
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr[-3000:]
        assert "APPLIED" in shown.stdout and "unreadable" not in shown.stdout  # its topics too
        assert cli(plain, "status").returncode != 0  # without it: the unmigrated default schema, in one line
    finally:
        delete_topics(plain, "demo-")
