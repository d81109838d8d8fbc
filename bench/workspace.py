"""Fresh schemas and topics for one benchmark run, removed again at the end.

Every measured component gets a schema of its own (migrated with the project's
DDL where it writes the job's tables) so no component finds another's rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from mutagg.demo import url_with_schema
from mutagg.migrate import migrate
from mutagg.settings import Settings, with_overrides
from mutagg.topics import create_topics
from schemas.registry import Registry
from sources.kafka import list_partitions


@dataclass
class Workspace:
    """Names made for one run: `bench_<run>_<part>` schemas, `bench-<run>.<part>` topics."""

    base: Settings
    registry: Registry
    keep: bool = False
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    schemas: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)

    def schema(self, part: str, migrated: bool = True) -> Settings:
        """Settings whose database URL points at a new schema (migrated unless told not to)."""
        name = f"bench_{self.run_id}_{part}"
        with psycopg.connect(self.base.database_url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            connection.execute(f'CREATE SCHEMA "{name}"')
        self.schemas.append(name)
        settings = with_overrides(self.base, database_url=url_with_schema(self.base.database_url, name))
        if migrated:
            with psycopg.connect(settings.database_url) as connection:
                migrate(connection, self.registry)
        return settings

    def job_topics(self, settings: Settings, part: str, partitions: int) -> Settings:
        """The job's three topics, new, for `settings`."""
        prefix = f"bench-{self.run_id}.{part}"
        settings = with_overrides(
            settings, topic_mutations=f"{prefix}.mutations", topic_dlq=f"{prefix}.dlq",
            topic_status=f"{prefix}.status", topic_partitions=partitions,
        )
        self.topics += [settings.topic_mutations, settings.lane_topic, settings.topic_dlq, settings.topic_status]
        create_topics(settings)
        return settings

    def reader(self, shared: Settings, part: str) -> Settings:
        """A job reading `shared`'s input topic into a schema of its own, with its own status and DLQ topics."""
        settings = with_overrides(
            self.schema(part), topic_mutations=shared.topic_mutations, topic_partitions=shared.topic_partitions,
            topic_dlq=f"{shared.topic_dlq}.{part}", topic_status=f"{shared.topic_status}.{part}",
        )
        self.topics += [settings.topic_dlq, settings.topic_status]
        create_topics(settings)
        return settings

    def plain_topics(self, names: list[str], partitions: int) -> None:
        admin = AdminClient(self.base.kafka_client_config())
        for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names], operation_timeout=30).values():
            future.result(timeout=60)
        self.topics += names
        for name in names:
            list_partitions(self.base.kafka_client_config(), name, self.base.service_deadline_s, must_exist=False)

    def schema_name(self, part: str) -> str:
        return f"bench_{self.run_id}_{part}"

    def close(self) -> None:
        """Drop what the run made (unless `keep`)."""
        if self.keep:
            return
        if self.schemas:
            with psycopg.connect(self.base.database_url, autocommit=True) as connection:
                for name in self.schemas:
                    connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        if self.topics:
            admin = AdminClient(self.base.kafka_client_config())
            for future in admin.delete_topics(self.topics, operation_timeout=30).values():
                try:
                    future.result(timeout=60)
                except KafkaException:  # cleanup is best effort; a leftover topic is harmless
                    pass
        self.schemas, self.topics = [], []
