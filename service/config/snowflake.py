"""Snowflake's configuration: the ``SNOWFLAKE_*`` variables, the original project's
credentials file, the connector's ``connections.toml``, and the key for key-pair sign-in.

Everything here is validated once, into a :class:`ConnectionSpec` (whose
secrets never show in a repr) and :class:`Names` (identifiers that are safe to
render into SQL). A bad value is a :class:`ConfigError` naming the flag,
variable or file key to fix: exit 2.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from .errors import ConfigError

#: An unquoted Snowflake identifier (what we accept for names from configuration).
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,254}$")
DEFAULT_WAREHOUSE, DEFAULT_DATABASE, DEFAULT_SCHEMA = "COMPUTE_WH", "ECOMM", "PUBLIC"
#: Seconds one HTTP request of the connector may take (connect, then read).
SOCKET_TIMEOUT = 60


def identifier(value: Any, setting: str) -> str:
    """``value`` if it is a plain Snowflake identifier; else a ConfigError naming ``setting``."""
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise ConfigError(setting, f"{value!r} is not a valid Snowflake identifier")
    return value


#: orders_aggregated's TARGET_LAG: DOWNSTREAM (the task refreshes it), or its own lag.
TARGET_LAGS = {"task": "DOWNSTREAM", "target-lag": "'2 minutes'"}


@dataclass(frozen=True, slots=True)
class Names:
    """What is rendered into ``sql/`` (``{{warehouse}}`` ...), checked here once: identifiers,
    and the target lag, one of :data:`TARGET_LAGS`. ``warehouse`` is the layers' warehouse."""

    warehouse: str = DEFAULT_WAREHOUSE
    database: str = DEFAULT_DATABASE
    schema: str = DEFAULT_SCHEMA
    target_lag: str = TARGET_LAGS["task"]

    def __post_init__(self) -> None:
        for key in ("warehouse", "database", "schema"):
            identifier(getattr(self, key), f"SNOWFLAKE_{key.upper()}")
        if self.target_lag not in TARGET_LAGS.values():
            raise ConfigError("CDC_LAYERS_REFRESH", f"no target lag {self.target_lag!r}")

    def as_dict(self) -> dict[str, str]:
        return {
            "warehouse": self.warehouse,
            "database": self.database,
            "schema": self.schema,
            "target_lag": self.target_lag,
        }


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """Everything needed to open a connection. Secrets stay out of the repr."""

    account: str
    user: str
    database: str
    schema: str
    warehouse: str | None = None
    role: str | None = None
    authenticator: str | None = None
    host: str | None = None
    port: int | None = None
    protocol: str | None = None
    login_timeout: float = 60.0
    network_timeout: float = 120.0
    password: SecretStr | None = field(default=None, repr=False)
    private_key: bytes | None = field(default=None, repr=False)  # DER, PKCS#8, unencrypted
    telemetry: bool = True
    #: Session parameters: a statement waits at most this long for a lock, and runs at most
    #: this long ("Parameters": LOCK_TIMEOUT defaults to 43,200 s, STATEMENT_TIMEOUT_IN_SECONDS
    #: to 172,800 s on Snowflake; the connector polls a long statement without an end).
    lock_timeout: int = 60
    statement_timeout: int = 600

    @property
    def names(self) -> Names:
        return Names(self.warehouse or DEFAULT_WAREHOUSE, self.database, self.schema)

    @property
    def where(self) -> str:
        host = self.host or f"{self.account}.snowflakecomputing.com"
        return f"{self.protocol or 'https'}://{host}:{self.port or 443}"

    def kwargs(
        self, autocommit: bool, tag: str, statement_timeout: float | None = None
    ) -> dict[str, Any]:
        """Arguments for ``snowflake.connector.connect``: UTC, a login timeout, pyformat, and the
        session's bounds (``statement_timeout`` replaces the spec's)."""
        kw: dict[str, Any] = {
            "account": self.account,
            "user": self.user,
            "database": self.database,
            "schema": self.schema,
            "timezone": "UTC",
            "autocommit": autocommit,
            "paramstyle": "pyformat",
            "login_timeout": max(1, math.ceil(self.login_timeout)),
            "network_timeout": max(1, math.ceil(self.network_timeout)),
            # The bound on one request (connect and read), stated rather than left to the
            # connector's default (also 60 s): network_timeout only ends the connector's own
            # retries. Not shorter: Snowflake answers a long query within ~45 s ("still
            # running", then polled), and a request given up while the server still runs it
            # leaves its session busy.
            "socket_timeout": SOCKET_TIMEOUT,
            "application": "ecomm-cdc",
            "session_parameters": {
                "QUERY_TAG": f"ecomm-cdc {tag}",
                "LOCK_TIMEOUT": self.lock_timeout,
                "STATEMENT_TIMEOUT_IN_SECONDS": max(
                    1, math.ceil(statement_timeout or self.statement_timeout)
                ),
            },
        }
        for key in ("warehouse", "role", "host", "port", "protocol"):
            if getattr(self, key) is not None:
                kw[key] = getattr(self, key)
        if self.private_key is not None:
            kw["private_key"] = self.private_key
            kw["authenticator"] = "SNOWFLAKE_JWT"
        elif self.password is not None:
            kw["password"] = self.password.get_secret_value()
        if self.authenticator and self.private_key is None:
            kw["authenticator"] = self.authenticator
        if not self.telemetry:
            kw["session_parameters"]["CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED"] = False
            kw["session_parameters"]["CLIENT_TELEMETRY_ENABLED"] = False
        return kw


class SnowflakeSettings(BaseModel):
    """The connector's usual variables (``SNOWFLAKE_*``)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    account: str | None = None
    user: str | None = None
    password: SecretStr | None = None
    private_key_file: Path | None = None
    private_key_file_pwd: SecretStr | None = None
    authenticator: str | None = None
    role: str | None = None
    warehouse: str | None = DEFAULT_WAREHOUSE
    database: str = DEFAULT_DATABASE
    schema_: str = Field(DEFAULT_SCHEMA, alias="SNOWFLAKE_SCHEMA")
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    protocol: Literal["https", "http"] | None = None
    login_timeout: float = Field(60.0, gt=0, le=3600)
    network_timeout: float = Field(120.0, gt=0, le=3600)

    @field_validator("role", "warehouse", "database", "schema_")
    @classmethod
    def _identifier(cls, v: str | None) -> str | None:
        if v is not None and not IDENTIFIER.match(v):
            raise ValueError(f"{v!r} is not a valid Snowflake identifier")
        return v

    def spec(
        self, credentials: Path | None = None, connection: str | None = None
    ) -> ConnectionSpec:
        """How to connect, with ``--credentials`` / ``--connection`` merged over these variables."""
        return connection_spec(self, credentials, connection)

    @property
    def names(self) -> Names:
        return Names(self.warehouse or DEFAULT_WAREHOUSE, self.database, self.schema_)

    @property
    def configured(self) -> bool:
        """Credentials enough to try a sign-in."""
        return bool(self.account and self.user)


# -- files and keys -------------------------------------------------------------

#: Keys read from --credentials (the original project's file) and --connection.
_FILE_KEYS = (
    "account",
    "user",
    "password",
    "authenticator",
    "role",
    "warehouse",
    "database",
    "schema",
    "host",
    "port",
    "protocol",
    "private_key_file",
    "private_key_file_pwd",
)
_SECRET_KEYS = frozenset({"password", "private_key_file_pwd"})


def _credentials_file(path: Path) -> dict[str, Any]:
    """The original project's snowflake_credentials.json."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("--credentials", f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError("--credentials", f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError("--credentials", f"{path}: not JSON ({exc.args[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError("--credentials", f"{path}: expected a JSON object")
    return {k: data[k] for k in _FILE_KEYS if data.get(k) not in (None, "")}


def _connections_toml(name: str) -> dict[str, Any]:
    """A named connection from the connector's own connections.toml."""
    from snowflake.connector.config_manager import CONFIG_MANAGER
    from snowflake.connector.constants import CONNECTIONS_FILE

    try:
        connections: Any = CONFIG_MANAGER["connections"]
    except Exception as exc:  # the connector's own config errors, TOML syntax errors
        raise ConfigError("--connection", f"cannot read {CONNECTIONS_FILE}: {exc}") from None
    if name not in connections:
        raise ConfigError("--connection", f"no connection named {name!r} in {CONNECTIONS_FILE}")
    section = dict(connections[name])
    return {k: section[k] for k in _FILE_KEYS if section.get(k) not in (None, "")}


def load_private_key(path: Path, passphrase: SecretStr | None) -> bytes:
    """The RSA key for key-pair (JWT) sign-in, as unencrypted PKCS#8 DER.

    Any problem with the file is a configuration error (exit 2) naming the
    variable to fix; the key's bytes never reach a message.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    setting, pwd_setting = "SNOWFLAKE_PRIVATE_KEY_FILE", "SNOWFLAKE_PRIVATE_KEY_FILE_PWD"
    try:
        data = path.expanduser().read_bytes()
    except FileNotFoundError:
        raise ConfigError(setting, f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(setting, f"{path}: {exc.strerror}") from None
    pwd = passphrase.get_secret_value().encode() if passphrase else None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=pwd)
        else:
            key = serialization.load_der_private_key(data, password=pwd)
    except TypeError:
        if pwd is None:
            raise ConfigError(pwd_setting, "the key is encrypted: give its passphrase") from None
        raise ConfigError(pwd_setting, "is set, but the key is not encrypted") from None
    except Exception:  # ValueError, UnsupportedAlgorithm: bad data or a wrong passphrase
        if pwd is not None:
            raise ConfigError(
                setting, f"{path}: not a private key, or {pwd_setting} does not decrypt it"
            ) from None
        raise ConfigError(setting, f"{path}: not a PEM or DER private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(setting, f"{path}: Snowflake key-pair sign-in needs an RSA key")
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def connection_spec(
    env: SnowflakeSettings, credentials: Path | None = None, connection: str | None = None
) -> ConnectionSpec:
    """Merge --credentials / --connection (they win, as flags do) over the SNOWFLAKE_* variables.

    Names are validated as identifiers here, once; a missing or bad value is
    a :class:`ConfigError` naming the flag or variable to fix.
    """
    given: dict[str, Any] = {}
    source = "SNOWFLAKE_"
    if credentials is not None:
        given, source = _credentials_file(credentials), "--credentials"
    if connection is not None:
        given, source = {**given, **_connections_toml(connection)}, "--connection"

    def pick(key: str) -> Any:
        if key in given:
            return given[key]
        value = getattr(env, "schema_" if key == "schema" else key)
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    def name_of(key: str) -> str:
        return f"{source} ({key})" if key in given else "SNOWFLAKE_" + key.upper()

    account, user = pick("account"), pick("user")
    if not account:
        raise ConfigError(
            "SNOWFLAKE_ACCOUNT",
            "is required for the snowflake target "
            "(or give --credentials FILE or --connection NAME)",
        )
    if not user:
        raise ConfigError("SNOWFLAKE_USER", "is required for the snowflake target")
    names = {}
    for key in ("database", "schema", "warehouse", "role"):
        value = pick(key)
        names[key] = None if value in (None, "") else identifier(value, name_of(key))
    key_file, password = pick("private_key_file"), pick("password")
    private_key = None
    if key_file:
        pwd = pick("private_key_file_pwd")
        private_key = load_private_key(Path(key_file), SecretStr(pwd) if pwd else None)
    authenticator = pick("authenticator")
    if private_key is None and not password and not authenticator:
        raise ConfigError(
            "SNOWFLAKE_PASSWORD",
            "no password: set it, or SNOWFLAKE_PRIVATE_KEY_FILE for key-pair sign-in",
        )
    port = pick("port")
    try:
        port = None if port in (None, "") else int(port)
    except (TypeError, ValueError):
        raise ConfigError(name_of("port"), f"{port!r} is not a port number") from None
    protocol = pick("protocol")
    if protocol not in (None, "http", "https"):
        raise ConfigError(name_of("protocol"), f"{protocol!r}: expected http or https")
    return ConnectionSpec(
        account=str(account),
        user=str(user),
        database=names["database"] or DEFAULT_DATABASE,
        schema=names["schema"] or DEFAULT_SCHEMA,
        warehouse=names["warehouse"],
        role=names["role"],
        authenticator=authenticator,
        host=pick("host"),
        port=port,
        protocol=protocol,
        login_timeout=env.login_timeout,
        network_timeout=env.network_timeout,
        password=SecretStr(str(password)) if password else None,
        private_key=private_key,
    )
