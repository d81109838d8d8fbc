"""Kafka security settings, and the typed errors for rejected credentials and certificates."""

from __future__ import annotations

import psycopg
import pytest
from confluent_kafka import KafkaError
from hypothesis import given
from hypothesis import strategies as st

from mutagg.security import (
    AuthenticationError,
    CertificateError,
    KafkaErrorWatch,
    database_failure,
    kafka_failure,
    kafka_security_config,
)
from mutagg.settings import Settings, load_settings
from schemas.errors import ConfigError

SASL = {
    "MUTAGG_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "MUTAGG_KAFKA_SASL_USERNAME": "mutagg",
}


def test_no_security_settings_leave_the_client_config_as_it_was():
    config = load_settings(environ={}).kafka_client_config()
    assert not any(key.startswith(("security.", "sasl.", "ssl.")) for key in config)


def test_sasl_ssl_from_the_environment_and_a_mounted_password_file(tmp_path):
    (tmp_path / "password").write_text("s3cret-pw\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_settings(environ={
        **SASL,
        "MUTAGG_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
        "MUTAGG_KAFKA_SSL_CA_FILE": str(tmp_path / "ca.pem"),
    })
    config = settings.kafka_client_config()
    assert {k: v for k, v in config.items() if k != "logger"} == {
        "bootstrap.servers": "127.0.0.1:19092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",  # the default
        "sasl.username": "mutagg",
        "sasl.password": "s3cret-pw",  # stripped of the file's newline
        "ssl.ca.location": str(tmp_path / "ca.pem"),
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert "s3cret-pw" not in repr(settings)


def test_explicit_kafka_config_keys_still_win():
    settings = Settings(kafka_security_protocol="SSL", kafka_config={"ssl.endpoint.identification.algorithm": "none"})
    assert settings.kafka_client_config()["ssl.endpoint.identification.algorithm"] == "none"


@pytest.mark.parametrize(("environ", "message"), [
    ({"MUTAGG_KAFKA_SASL_USERNAME": "u", "MUTAGG_KAFKA_SASL_PASSWORD": "p"}, "refusing to connect in plaintext"),
    ({"MUTAGG_KAFKA_SSL_CA_FILE": "/ca.pem"}, "refusing to connect in plaintext"),
    ({**SASL}, "MUTAGG_KAFKA_SASL_PASSWORD"),
    ({**SASL, "MUTAGG_KAFKA_SASL_PASSWORD": "p", "MUTAGG_KAFKA_SASL_MECHANISM": "GSSAPI"}, "GSSAPI"),
    ({"MUTAGG_KAFKA_SECURITY_PROTOCOL": "TLS"}, "'TLS'"),
    ({"MUTAGG_KAFKA_SECURITY_PROTOCOL": "SSL", "MUTAGG_KAFKA_SASL_USERNAME": "u"}, "SASL settings"),
    ({"MUTAGG_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "MUTAGG_KAFKA_SASL_USERNAME": "u",
      "MUTAGG_KAFKA_SASL_PASSWORD": "p", "MUTAGG_KAFKA_SSL_CA_FILE": "/ca.pem"}, "CA_FILE is set"),
    ({"MUTAGG_KAFKA_SECURITY_PROTOCOL": "SSL", "MUTAGG_KAFKA_SSL_CA_FILE": "/no/such/ca.pem"}, "no such file"),
])
def test_inconsistent_security_settings_fail_when_loaded(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


optional_text = st.one_of(st.none(), st.sampled_from(["", "u", "SCRAM-SHA-256", "PLAIN", "x"]))


@given(
    protocol=st.one_of(st.none(), st.sampled_from(["", "PLAINTEXT", "ssl", "SASL_PLAINTEXT", "SASL_SSL", "TLS"])),
    mechanism=optional_text, username=optional_text, password=optional_text,
)
def test_security_config_never_weakens_silently(protocol, mechanism, username, password):
    settings = Settings(kafka_security_protocol=protocol, kafka_sasl_mechanism=mechanism,
                        kafka_sasl_username=username, kafka_sasl_password=password)
    try:
        config = kafka_security_config(settings)
    except ConfigError:
        return
    if username or password or mechanism:  # credentials are only ever used over SASL
        assert config["security.protocol"].startswith("SASL_")
    if any(key.startswith("sasl.") for key in config):
        assert config["sasl.username"] and config["sasl.password"]
    if config.get("security.protocol", "").endswith("SSL"):
        assert config["ssl.endpoint.identification.algorithm"] == "https"


def test_kafka_authentication_and_certificate_errors_are_typed_and_others_are_not():
    auth = kafka_failure(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials"),
                         "b:9093", "mutagg")
    assert isinstance(auth, AuthenticationError) and "user 'mutagg'" in str(auth) and "b:9093" in str(auth)
    untrusted = kafka_failure(KafkaError(KafkaError._TRANSPORT, "b/bootstrap: error:0A000086:SSL routines::"
                                         "certificate verify failed (after 5ms in state SSL_HANDSHAKE)"), "b:9093")
    assert isinstance(untrusted, CertificateError) and "Kafka TLS certificate" in str(untrusted)
    for transient in (
        KafkaError(KafkaError._TRANSPORT, "Connect to ipv4#127.0.0.1:9093 failed: Connection refused"),
        KafkaError(KafkaError._SSL, "SSL handshake failed: unexpected eof while reading"),  # a restarting broker
        KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"),
    ):
        assert kafka_failure(transient, "b:9093") is None


def test_the_watch_keeps_the_first_security_failure():
    watch = KafkaErrorWatch.for_config({"bootstrap.servers": "b:9093", "sasl.username": "mutagg"})
    watch(KafkaError(KafkaError._TRANSPORT, "Connection refused"))
    watch.raise_if_failed()  # nothing yet
    watch(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: first"))
    watch(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    watch(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: second"))
    assert watch.all_brokers_down
    with pytest.raises(AuthenticationError, match="first"):
        watch.raise_if_failed()


URL = "postgresql://mutagg_job:pw-in-url@db.example:5433/mutagg?sslmode=verify-full&sslrootcert=/ca.pem"
SERVER = 'connection failed: connection to server at "10.0.0.5", port 5433 failed: '


@pytest.mark.parametrize(("reason", "kind"), [
    ('FATAL:  password authentication failed for user "mutagg_job"', AuthenticationError),
    ("fe_sendauth: no password supplied", AuthenticationError),
    ('FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "mutagg_job", database "mutagg", no encryption',
     AuthenticationError),
    ("SSL error: certificate verify failed", CertificateError),
    ('server certificate for "other.example" does not match host name "db.example"', CertificateError),
    ('root certificate file "/ca.pem" does not exist', CertificateError),
    ("server does not support SSL, but SSL was required", CertificateError),
    ("Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?", None),
    ("SSL SYSCALL error: EOF detected", None),
    ("FATAL:  the database system is starting up", None),
])
def test_database_connection_failures_no_retry_can_fix_are_typed(reason, kind):
    failure = database_failure(psycopg.OperationalError(SERVER + reason), URL)
    if kind is None:
        assert failure is None
        return
    assert isinstance(failure, kind)
    text = str(failure)
    assert "PostgreSQL" in text and "db.example:5433" in text and "'mutagg_job'" in text
    assert "sslmode=verify-full" in text and "pw-in-url" not in text
