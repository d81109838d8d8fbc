"""Secure connections: the Kafka client's security settings, and clear, typed
failures when Kafka or PostgreSQL rejects the job's credentials or certificate.

Such failures are not transient: retrying them until the service deadline only
hides the cause behind "unreachable". `preflight` checks both services once at
start-up and raises `AuthenticationError` or `CertificateError`; an unreachable
service is left to the callers' own retry and deadline.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from psycopg.conninfo import conninfo_to_dict

from schemas.errors import ConfigError, MutaggError

if TYPE_CHECKING:
    from mutagg.settings import Settings

log = logging.getLogger(__name__)

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
DEFAULT_SASL_MECHANISM = "SCRAM-SHA-512"

# libpq reports these only as text (no SQLSTATE on a failed connection).
_PG_AUTHENTICATION = re.compile(
    r"authentication failed|no password supplied|no pg_hba\.conf entry|SCRAM authentication"
    r'|role ".*" does not exist'
)
_PG_CERTIFICATE = re.compile(
    r"certificate verify failed|does not match host name|root certificate file|server does not support SSL"
)


class AuthenticationError(MutaggError):
    """Kafka or PostgreSQL rejected the job's credentials (or has no rule admitting them)."""

    def __init__(self, service: str, message: str):
        super().__init__(f"{service} authentication failed: {message}")
        self.service = service


class CertificateError(MutaggError):
    """The server's TLS certificate could not be verified (untrusted CA, wrong host name),
    or TLS was required and the server does not offer it."""

    def __init__(self, service: str, message: str):
        super().__init__(f"{service} TLS certificate verification failed: {message}")
        self.service = service


class AuthorizationError(MutaggError):
    """Kafka accepted the credentials but its ACLs deny the principal an operation it needs:
    no retry fixes that, a platform team does (`mutagg topics acls`, README "Kafka ACLs")."""

    def __init__(self, message: str):
        super().__init__(f"Kafka authorization failed: {message}")


def kafka_denied(
    error: KafkaError, bootstrap: str, username: str | None, topic: str | None = None, group: str | None = None,
) -> AuthorizationError | None:
    """The typed error if `error` says an ACL denied access to the topic or group, else None."""
    if error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        resource = f"topic {topic!r}" if topic else "a topic"
    elif error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
        resource = f"consumer group {group!r}" if group else "a consumer group"
    else:
        return None
    who = f"user {username!r}" if username else "this client"
    return AuthorizationError(
        f"broker {bootstrap} denied {who} access to {resource}: {error.str()} (the ACLs of the job's "
        "principal: `mutagg topics acls`, README \"Kafka ACLs\")"
    )


def kafka_security_config(settings: Settings) -> dict[str, str]:
    """librdkafka's security.protocol, sasl.* and ssl.* keys for `settings` (empty if none set).

    Raises `ConfigError` for a combination that would silently fall back to something
    weaker (credentials without a SASL protocol, SASL without a password, a missing CA file).
    """
    protocol = (settings.kafka_security_protocol or "").upper()
    sasl_given = any((settings.kafka_sasl_mechanism, settings.kafka_sasl_username, settings.kafka_sasl_password))
    if not protocol:
        if sasl_given or settings.kafka_ssl_ca_file:
            raise ConfigError(
                "Kafka credentials or a CA file are set but MUTAGG_KAFKA_SECURITY_PROTOCOL is not "
                "(expected SASL_SSL or SSL); refusing to connect in plaintext"
            )
        return {}
    if protocol not in KAFKA_PROTOCOLS:
        raise ConfigError(f"MUTAGG_KAFKA_SECURITY_PROTOCOL={protocol!r}: expected one of {KAFKA_PROTOCOLS}")
    config = {"security.protocol": protocol}
    if protocol.startswith("SASL_"):
        mechanism = (settings.kafka_sasl_mechanism or DEFAULT_SASL_MECHANISM).upper()
        if mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"MUTAGG_KAFKA_SASL_MECHANISM={mechanism!r}: expected one of {SASL_MECHANISMS}")
        if not settings.kafka_sasl_username or not settings.kafka_sasl_password:
            raise ConfigError(
                f"Kafka {protocol} needs MUTAGG_KAFKA_SASL_USERNAME and MUTAGG_KAFKA_SASL_PASSWORD "
                "(or MUTAGG_KAFKA_SASL_PASSWORD_FILE)"
            )
        config.update({
            "sasl.mechanism": mechanism,
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": settings.kafka_sasl_password,
        })
    elif sasl_given:
        raise ConfigError(f"Kafka SASL settings are set but the security protocol is {protocol}")
    if protocol.endswith("SSL"):
        config["ssl.endpoint.identification.algorithm"] = "https"  # verify the broker's host name
        if settings.kafka_ssl_ca_file:
            if not Path(settings.kafka_ssl_ca_file).is_file():
                raise ConfigError(f"MUTAGG_KAFKA_SSL_CA_FILE {settings.kafka_ssl_ca_file}: no such file")
            config["ssl.ca.location"] = settings.kafka_ssl_ca_file
    elif settings.kafka_ssl_ca_file:
        raise ConfigError(f"MUTAGG_KAFKA_SSL_CA_FILE is set but the security protocol is {protocol}")
    return config


def kafka_failure(error: KafkaError, bootstrap: str, username: str | None = None) -> MutaggError | None:
    """The typed error for a librdkafka error no retry can fix, or None for any other error."""
    code = error.code()
    text = error.str()
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        who = f" as user {username!r}" if username else ""
        return AuthenticationError("Kafka", f"broker {bootstrap} rejected the credentials{who}: {text}")
    # Other _SSL errors (a handshake cut by a restarting broker) are transient.
    if "certificate verify failed" in text or (code == KafkaError._SSL and "certificate" in text):
        return CertificateError("Kafka", f"broker {bootstrap}: {text}")
    return None


class KafkaErrorWatch:
    """An `error_cb` for librdkafka clients that keeps the first security failure it sees.

    librdkafka retries authentication and handshake failures forever and reports them only
    through this callback (a metadata request just times out), so a client that wants to
    fail with the cause installs a watch and calls `raise_if_failed` after its own errors.
    """

    def __init__(self, bootstrap: str, username: str | None = None):
        self.bootstrap = bootstrap
        self.username = username
        self.failure: MutaggError | None = None
        self.all_brokers_down = False  # reported after the cause of a failed connection

    @classmethod
    def for_config(cls, config: dict) -> KafkaErrorWatch:
        """A watch for a client built from this librdkafka config."""
        return cls(str(config.get("bootstrap.servers", "")), config.get("sasl.username"))

    def __call__(self, error: KafkaError) -> None:
        if self.failure is None:
            self.failure = kafka_failure(error, self.bootstrap, self.username)
        self.all_brokers_down |= error.code() == KafkaError._ALL_BROKERS_DOWN

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure


def database_failure(exc: psycopg.OperationalError, url: str) -> MutaggError | None:
    """The typed error for a connection failure no retry can fix, or None."""
    text = str(exc)
    where = _database_endpoint(url)
    if _PG_CERTIFICATE.search(text):
        return CertificateError("PostgreSQL", f"{where}: {_reason(text)} (check sslrootcert and the host name)")
    if _PG_AUTHENTICATION.search(text):
        return AuthenticationError("PostgreSQL", f"{where}: {_reason(text)}")
    return None


def _database_endpoint(url: str) -> str:
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "server"
    return (
        f"server {params.get('host', 'localhost')}:{params.get('port', 5432)} as user "
        f"{params.get('user', '(default)')!r} (sslmode={params.get('sslmode', 'prefer')})"
    )


def _reason(text: str) -> str:
    """libpq's message names the server first; keep the reason after "failed: "."""
    reason = text.strip().split("failed: ", 2)[-1]
    return " ".join(reason.split())


def check_kafka(settings: Settings, timeout_s: float = 10.0) -> None:
    """Ask the broker for metadata once; raise a typed error if it rejects our credentials or
    certificate. Unreachability is not judged here (the source retries until its deadline)."""
    watch = KafkaErrorWatch(settings.kafka_bootstrap, settings.kafka_sasl_username)
    try:
        admin = AdminClient({**settings.kafka_client_config(), "error_cb": watch})
    except KafkaException as exc:  # e.g. a CA file librdkafka cannot parse
        raise ConfigError(f"Kafka client configuration rejected: {exc}") from exc
    give_up_at = time.monotonic() + min(timeout_s, settings.service_deadline_s)
    while True:
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException:
            admin.poll(0.2)  # serves error_cb
            watch.raise_if_failed()
        if watch.all_brokers_down or time.monotonic() >= give_up_at:
            log.warning("Kafka did not answer the security check", extra={"bootstrap": settings.kafka_bootstrap})
            return


def check_database(settings: Settings, timeout_s: float = 10.0) -> None:
    """Connect once; raise a typed error for rejected credentials or an untrusted certificate."""
    try:
        connection = psycopg.connect(
            settings.database_url, connect_timeout=max(2, int(min(timeout_s, settings.service_deadline_s))),
            application_name="mutagg-preflight",
        )
    except psycopg.OperationalError as exc:
        failure = database_failure(exc, settings.database_url)
        if failure is not None:
            raise failure from exc
        return
    connection.close()


def preflight(settings: Settings) -> None:
    """Fail fast, with the cause, on credentials or certificates the services reject."""
    check_database(settings)
    check_kafka(settings)
