"""MUTAGG_SCHEMA: the schema every command uses, folded once into the database URL."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from mutagg.cli import _parser, _settings
from mutagg.demo import status_command
from mutagg.settings import Settings, load_settings, url_with_schema, with_overrides
from schemas.errors import ConfigError


def options(url: str) -> str:
    return " ".join(parse_qs(urlsplit(url).query)["options"])


def test_the_schema_setting_becomes_the_urls_search_path():
    settings = load_settings(environ={"MUTAGG_SCHEMA": "demo"})
    assert settings.schema == "demo" and options(settings.database_url) == "-c search_path=demo"
    assert "MUTAGG_SCHEMA" not in settings.as_env()  # the URL a child gets already carries it
    assert load_settings(environ={}).schema is None
    assert "options" not in load_settings(environ={}).database_url


def test_the_flag_wins_over_the_environment_and_other_url_options_stay(monkeypatch):
    url = "postgresql://u@h:5432/db?sslmode=require&options=-c%20statement_timeout%3D5s%20-c%20search_path%3Dold"
    monkeypatch.setenv("MUTAGG_DATABASE_URL", url)
    monkeypatch.setenv("MUTAGG_SCHEMA", "from_env")
    settings = _settings(_parser().parse_args(["--schema", "from_flag", "status"]))
    assert options(settings.database_url) == "-c statement_timeout=5s -c search_path=from_flag"
    assert parse_qs(urlsplit(settings.database_url).query)["sslmode"] == ["require"]
    moved = with_overrides(settings, schema="other")
    assert moved.schema == "other" and options(moved.database_url).endswith("-c search_path=other")
    assert url_with_schema(moved.database_url, "x") == url_with_schema(settings.database_url, "x")


@pytest.mark.parametrize("schema", ["demo; DROP TABLE x", "a b", "1st", "x" * 64, '"q"'])
def test_a_schema_that_is_not_a_plain_identifier_is_refused(schema):
    with pytest.raises(ConfigError, match="plain identifier"):
        load_settings(environ={"MUTAGG_SCHEMA": schema})


def test_the_demo_names_the_command_that_shows_its_results():
    settings = Settings(topic_mutations="demo-1.in", topic_dlq="demo-1.dlq", topic_status="demo-1.status")
    command = status_command(settings)
    assert command.startswith("MUTAGG_SCHEMA=demo ") and command.endswith("mutagg status")
    assert "MUTAGG_TOPIC_MUTATIONS=demo-1.in MUTAGG_TOPIC_DLQ=demo-1.dlq MUTAGG_TOPIC_STATUS=demo-1.status" in command
