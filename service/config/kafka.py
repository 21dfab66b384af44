"""The kafka target's settings: checks across fields, and librdkafka's configuration from them.

The fields live in :class:`service.config.Settings` (``CDC_KAFKA_*``); what is checked here
needs more than one of them (a SASL mechanism needs a user and a password) or the file
system (TLS files). A bad value is a :class:`ConfigError` naming the flag or variable:
exit 2. Secrets are ``SecretStr`` and reach librdkafka's configuration only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from . import Settings

#: Debezium's ``<prefix>.<schema>.<table>``.
DEFAULT_TOPIC = "ecomm.public.raw_orders"
#: Kafka's legal topic names.
TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
BOOTSTRAP = re.compile(r"^[A-Za-z0-9.\-_\[\]:]+:\d{1,5}(,[A-Za-z0-9.\-_\[\]:]+:\d{1,5})*$")

_TLS_FILES = ("kafka_ssl_ca_location", "kafka_ssl_certificate_location", "kafka_ssl_key_location")


def check_kafka(s: Settings, name: Callable[[str], str]) -> None:
    """What one field cannot check alone; ``name`` says how the user set a field."""
    if s.target == "kafka" and not s.kafka_bootstrap_servers:
        raise ConfigError(
            name("kafka_bootstrap_servers"), "the kafka target needs the brokers' host:port"
        )
    protocol = s.kafka_security_protocol or "PLAINTEXT"
    sasl = protocol.startswith("SASL")
    if sasl and s.kafka_sasl_mechanism is None:
        raise ConfigError(name("kafka_sasl_mechanism"), f"{protocol} needs a SASL mechanism")
    if s.kafka_sasl_mechanism is not None and not sasl:
        raise ConfigError(
            name("kafka_security_protocol"),
            f"SASL mechanism {s.kafka_sasl_mechanism} needs SASL_PLAINTEXT or SASL_SSL",
        )
    if sasl and s.kafka_sasl_mechanism != "OAUTHBEARER":
        for field in ("kafka_sasl_username", "kafka_sasl_password"):
            if getattr(s, field) is None:
                raise ConfigError(name(field), f"SASL {s.kafka_sasl_mechanism} needs it")
    for field in _TLS_FILES:
        path = getattr(s, field)
        if path is None:
            continue
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ConfigError(name(field), f"{path}: no readable file there")
        if not protocol.endswith("SSL"):
            raise ConfigError(
                name("kafka_security_protocol"), "TLS files need SSL or SASL_SSL to be used"
            )


def state_topic(s: Settings) -> str:
    """Where the stream's identity and claims live."""
    return s.kafka_state_topic or f"{s.kafka_topic}.cdc_state"


def client_config(s: Settings) -> dict[str, Any]:
    """librdkafka's settings common to every client (producers, consumers, admin).

    The secrets are put in here and nowhere else: this dict is never logged.
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": s.kafka_bootstrap_servers,
        # A client that cannot reach the brokers says so within the timeout, not never.
        "socket.connection.setup.timeout.ms": int(min(s.kafka_timeout, 30) * 1000),
        "client.id": "ecomm-cdc",
    }
    if s.kafka_security_protocol:
        conf["security.protocol"] = s.kafka_security_protocol
    if s.kafka_sasl_mechanism:
        conf["sasl.mechanism"] = s.kafka_sasl_mechanism
    if s.kafka_sasl_username is not None:
        conf["sasl.username"] = s.kafka_sasl_username
    if s.kafka_sasl_password is not None:
        conf["sasl.password"] = s.kafka_sasl_password.get_secret_value()
    for field, key in zip(
        _TLS_FILES,
        ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"),
        strict=True,
    ):
        path = getattr(s, field)
        if path is not None:
            conf[key] = str(path)
    if s.kafka_ssl_key_password is not None:
        conf["ssl.key.password"] = s.kafka_ssl_key_password.get_secret_value()
    return conf
