"""One frozen settings object, from flags and ``CDC_*`` / ``SNOWFLAKE_*`` variables.

A flag wins over its variable. Every field is validated here, once; a bad
value becomes a :class:`ConfigError` naming the flag or variable it came from,
which the command line prints as one line and exit code 2. Secrets are
``SecretStr``: they never show in a repr or a log line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ..pipeline import traffic
from ..pipeline.traffic import Profile
from .errors import ConfigError
from .kafka import BOOTSTRAP, DEFAULT_TOPIC, TOPIC, check_kafka
from .snowflake import (
    DEFAULT_DATABASE,
    DEFAULT_SCHEMA,
    DEFAULT_WAREHOUSE,
    IDENTIFIER,
    TARGET_LAGS,
    ConnectionSpec,
    Names,
    SnowflakeSettings,
    identifier,
)

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_SCHEMA",
    "DEFAULT_WAREHOUSE",
    "IDENTIFIER",
    "TARGETS",
    "Config",
    "ConfigError",
    "ConnectionSpec",
    "Names",
    "Settings",
    "SnowflakeSettings",
    "identifier",
    "load",
]

Target = Literal["duckdb", "snowflake", "emulator", "null", "kafka"]
TARGETS: tuple[str, ...] = ("duckdb", "snowflake", "emulator", "null", "kafka")

SHARD = re.compile(r"^[A-Za-z0-9_]{1,16}$")


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


#: The ranges the whole pipeline supports (generator, DuckDB, Snowflake's
#: TIMESTAMP_NTZ, verify): a setting outside them is refused, exit 2.
FIRST_START = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LAST_START = dt.datetime(2999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
LAST_ORDER_DATE = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
GAP_SECONDS = 0.5  # the generator's simulated time per event (GeneratorSettings.mean_gap_seconds)
MAX_EVENTS = 10**15
MAX_SEED = 2**63 - 1
MAX_RATE = 1e9
MAX_SECONDS = 10**9
MAX_TIME_SCALE = 1e7


class Settings(BaseModel):
    """Everything ``ecomm-cdc`` reads. Field names are the flag names (``--batch-size``)."""

    # inf and nan are not numbers a setting can mean ("--rate inf" is refused).
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    target: Target | None = Field(
        None,
        description="duckdb, snowflake, emulator, null or kafka; default: snowflake when "
        "Snowflake credentials are configured, else duckdb",
    )
    events: int | None = Field(
        None, ge=1, le=MAX_EVENTS, description="stop after this many events of the stream"
    )
    duration: float | None = Field(
        None, gt=0, le=MAX_SECONDS, description="stop after this many seconds"
    )
    rate: float = Field(
        0.0, ge=0, le=MAX_RATE, description="events per second; 0 = as fast as possible"
    )
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="stream seed (default 42, or the stored stream's)"
    )
    traffic: str | None = Field(
        None,
        description="traffic profile: steady, diurnal, flash-sale, or a TOML file (default "
        "steady, or the stored stream's); part of the stream's identity",
    )
    time_scale: float | None = Field(
        None,
        gt=0,
        le=MAX_TIME_SCALE,
        description="the simulated clock runs this many times faster than the wall clock "
        "(default 1 under a profile; part of the stream's identity, as --time-scale / --rate)",
    )
    start: dt.datetime | None = Field(
        None,
        description="simulated clock start, ISO 8601, UTC when naive (default: now, "
        "or the stored stream's)",
    )
    workers: int = Field(4, ge=1, le=256, description="consumer coroutines")
    batch_size: int = Field(5000, ge=1, le=1_000_000, description="events per batch at most")
    flush_interval: float = Field(
        1.0, gt=0, le=3600, description="seconds before a partial batch is applied"
    )
    queue_size: int = Field(
        10_000, ge=1, le=10_000_000, description="events the queue holds before the producer waits"
    )
    duckdb_path: Path = Field(Path("data/ecomm.duckdb"), description="the embedded default's file")
    duckdb_memory_mb: int | None = Field(
        None,
        ge=32,
        le=1_048_576,
        description="DuckDB's memory limit in MB (default 48 + 4 per worker)",
    )
    duckdb_reopen_events: int = Field(
        5_000_000,
        ge=0,
        description="events after which the DuckDB file is closed and reopened (0: never)",
    )
    shard: str = Field("0", description="this replica's shard: order ids are ORD-<shard>-<n>")
    partitions: int = Field(
        64, ge=1, le=4096, description="partitions of the stream (part of its identity)"
    )
    reset: bool = Field(False, description="drop the stream the target holds and start this one")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: JSON unless stdout is a terminal"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")
    progress: bool | None = Field(
        None, description="progress bar (default: on for a bounded run in a terminal)"
    )
    http_port: int = Field(8080, ge=0, le=65535, description="health and metrics port; 0 = off")
    http_host: str = Field("0.0.0.0", description="address the HTTP server binds")  # noqa: S104
    retry_timeout: float = Field(
        600.0,
        gt=0,
        le=MAX_SECONDS,
        description="seconds one remote operation is retried through transient failures",
    )
    shutdown_timeout: float = Field(
        25.0, ge=0, le=3600, description="seconds to drain on SIGTERM before forcing exit"
    )
    stall_timeout: float = Field(
        300.0,
        gt=0,
        le=MAX_SECONDS,
        description="seconds with events waiting and no commit before /healthz fails",
    )
    query_api: bool = Field(
        True,
        description="serve ad-hoc read-only SQL on POST /api/query (the `query` command during "
        "a run); false turns it off (the dashboard and report, tasks, verify keep working)",
    )
    query_timeout: float = Field(
        10.0, gt=0, le=3600, description="seconds a query through the service may run"
    )
    refresh_interval: float = Field(
        120.0,
        ge=0.05,
        le=MAX_SECONDS,
        description="seconds between local refreshes of the warehouse layers",
    )
    layers_refresh: Literal["task", "target-lag"] = Field(
        "task",
        description="Snowflake: what refreshes the layers: the seed's task refresh_orders_agg "
        "every 2 minutes, or orders_aggregated's own TARGET_LAG of 2 minutes (no task)",
    )
    layers_warehouse: str | None = Field(
        None,
        description="Snowflake: the warehouse the dynamic tables and the task run on "
        "(default SNOWFLAKE_WAREHOUSE)",
    )
    lock_timeout: int = Field(
        60,
        ge=1,
        le=43_200,
        description="Snowflake: seconds a statement waits for a lock (LOCK_TIMEOUT; a lock "
        "timeout is retried)",
    )
    statement_timeout: int = Field(
        600,
        ge=1,
        le=172_800,
        description="Snowflake: seconds a statement of the service may run "
        "(STATEMENT_TIMEOUT_IN_SECONDS; reads through the service: CDC_QUERY_TIMEOUT)",
    )
    emulator_path: Path | None = Field(
        None, description="emulator target: keep its database in this folder"
    )
    credentials: Path | None = Field(
        None,
        description="the original project's snowflake_credentials.json (user, password, "
        "account, warehouse, database, schema)",
    )
    connection: str | None = Field(
        None, description="a named connection in the connector's connections.toml"
    )

    # -- the kafka target (docs/kafka.md); librdkafka's own settings, passed through --
    kafka_bootstrap_servers: str | None = Field(
        None, description="kafka target: host:port[,host:port...] of the brokers"
    )
    kafka_topic: str = Field(DEFAULT_TOPIC, description="kafka target: the change-event topic")
    kafka_state_topic: str | None = Field(
        None, description="kafka target: the stream's claims (default <topic>.cdc_state)"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = (
        Field(None, description="librdkafka security.protocol")
    )
    kafka_sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None
    ) = Field(None, description="librdkafka sasl.mechanism")
    kafka_sasl_username: str | None = Field(None, description="librdkafka sasl.username")
    kafka_sasl_password: SecretStr | None = Field(None, description="librdkafka sasl.password")
    kafka_ssl_ca_location: Path | None = Field(None, description="CA certificate file (PEM)")
    kafka_ssl_certificate_location: Path | None = Field(
        None, description="client certificate file (PEM)"
    )
    kafka_ssl_key_location: Path | None = Field(None, description="client key file (PEM)")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="the client key's password")
    kafka_tombstones: bool = Field(
        True, description="a tombstone (null value) after each delete, as Debezium does"
    )
    kafka_format: Literal["envelope", "flattened"] = Field(
        "envelope",
        description="envelope: Debezium's change event; flattened: ExtractNewRecordState's row",
    )
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "lz4", description="librdkafka compression.type (chosen by measurement: docs/kafka.md)"
    )
    kafka_linger_ms: float = Field(
        20.0, ge=0, le=60_000, description="librdkafka linger.ms (chosen by measurement)"
    )
    kafka_timeout: float = Field(
        15.0, gt=0, le=3600, description="seconds to reach the brokers before giving up"
    )

    @field_validator("start")
    @classmethod
    def _start_utc(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is None:
            return None
        v = _utc(v)
        if not FIRST_START <= v <= LAST_START:
            raise ValueError(
                f"must be between {FIRST_START:%Y-%m-%d} and {LAST_START:%Y-%m-%d} "
                "(order dates are backdated 90 days and advance 0.5 s per event; "
                "Snowflake's TIMESTAMP_NTZ and verify stop at year 9999)"
            )
        return v

    @model_validator(mode="after")
    def _stream_fits(self) -> Settings:
        """A bounded stream's clock must end before year 9999 (the unbounded one has
        7,000 years: 4 x 10**11 events)."""
        if self.start is not None and self.events is not None:
            room = (LAST_ORDER_DATE - self.start).total_seconds()
            if self.events * GAP_SECONDS > room:
                raise ValueError(
                    f"{self.events} events from {self.start:%Y-%m-%d} would date orders "
                    f"after {LAST_ORDER_DATE:%Y}: start earlier or stop sooner"
                )
        return self

    @field_validator("layers_warehouse")
    @classmethod
    def _warehouse(cls, v: str | None) -> str | None:
        if v is not None and not IDENTIFIER.match(v):
            raise ValueError(f"{v!r} is not a valid Snowflake identifier")
        return v

    @field_validator("kafka_topic", "kafka_state_topic")
    @classmethod
    def _topic(cls, v: str | None) -> str | None:
        if v is not None and not TOPIC.match(v):
            raise ValueError("must be 1-249 letters, digits, '.', '_' or '-'")
        return v

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap(cls, v: str | None) -> str | None:
        if v is not None and not BOOTSTRAP.match(v):
            raise ValueError("must be host:port[,host:port...]")
        return v

    @field_validator("shard")
    @classmethod
    def _shard(cls, v: str) -> str:
        if not SHARD.match(v):
            raise ValueError("must be 1-16 letters, digits or underscores")
        return v


class Config(BaseModel):
    """What a command runs with: the service settings and the Snowflake ones."""

    model_config = ConfigDict(frozen=True)

    settings: Settings
    snowflake: SnowflakeSettings
    #: Fields given explicitly (by flag or variable): a stored stream's values
    #: fill in the identity fields that were not.
    explicit: frozenset[str]
    #: The subset of ``explicit`` given as flags (to name the culprit as the user wrote it).
    flags: frozenset[str] = frozenset()

    def traffic_profile(self) -> Profile | None:
        """The profile ``--traffic`` names (None: steady, or not given); a bad one is a
        ConfigError naming the flag, the file and the key."""
        spec = self.settings.traffic
        if spec is None:
            return None
        name = self.name_of("traffic")
        try:
            return traffic.load(spec)
        except FileNotFoundError:
            builtins = ", ".join((traffic.STEADY, *traffic.BUILT_IN))
            raise ConfigError(
                name, f"no built-in profile or file {spec!r} (built-in: {builtins})"
            ) from None
        except traffic.ProfileError as exc:
            raise ConfigError(name, f"{spec}: {exc}") from None

    def check_run(self) -> None:
        """What only ``run`` reads, checked before anything is opened: the profile, and
        that a time scale has a rate to scale (other commands ignore both)."""
        self.traffic_profile()
        s = self.settings
        if s.time_scale is not None and s.rate == 0:
            raise ConfigError(
                self.name_of("time_scale"),
                "needs a --rate above 0 (as fast as possible has no wall clock to scale)",
            )

    def name_of(self, field: str) -> str:
        """How the user set ``field``: ``--duckdb-path`` or ``CDC_DUCKDB_PATH``."""
        return _setting_name(field, dict.fromkeys(self.flags), "CDC_")

    def snowflake_spec(self) -> ConnectionSpec:
        """How to connect to Snowflake (``--credentials`` / ``--connection`` over the variables),
        with the session's lock and statement bounds."""
        s = self.settings
        spec = self.snowflake.spec(s.credentials, s.connection)
        return dataclasses.replace(
            spec, lock_timeout=s.lock_timeout, statement_timeout=s.statement_timeout
        )

    def layer_names(self, spec: ConnectionSpec) -> Names:
        """What is rendered into ``sql/`` for ``spec``'s database: the layers' warehouse and
        orders_aggregated's target lag."""
        s = self.settings
        return dataclasses.replace(
            spec.names,
            warehouse=s.layers_warehouse or spec.names.warehouse,
            target_lag=TARGET_LAGS[s.layers_refresh],
        )

    @property
    def target(self) -> str:
        if self.settings.target is not None:
            return self.settings.target
        s = self.settings
        creds = self.snowflake.configured or s.credentials is not None or s.connection is not None
        return "snowflake" if creds else "duckdb"


def _setting_name(field: str, flags: Mapping[str, Any], prefix: str) -> str:
    if field in flags:
        return "--" + field.replace("_", "-")
    return prefix + field.rstrip("_").upper()


def _first_error(exc: ValidationError, flags: Mapping[str, Any], prefix: str) -> ConfigError:
    err = exc.errors()[0]
    # A check across fields (the stream's end date) is blamed on --events, the one to change.
    field = str(err["loc"][0]) if err["loc"] else "events"
    if field == "SNOWFLAKE_SCHEMA":
        field = "schema_"
    name = _setting_name(field, flags, prefix)
    msg = str(err["msg"]).removeprefix("Value error, ")
    given = err.get("input")
    if isinstance(given, str | int | float) and not isinstance(given, bool):
        return ConfigError(name, f"{msg} (got {given!r})")
    return ConfigError(name, msg)


def load(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration; flags (already parsed, ``None`` = not given) win over variables.

    ``env`` replaces ``os.environ`` (tests pass settings in rather than patching it).
    """
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    environ = dict(os.environ if env is None else env)
    cdc = {k[4:].lower(): v for k, v in environ.items() if k.upper().startswith("CDC_") and v != ""}
    known = set(Settings.model_fields)
    for key in cdc:
        if key not in known:
            raise ConfigError("CDC_" + key.upper(), "unknown setting")
    values = {**cdc, **given}
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        raise _first_error(exc, given, "CDC_") from None
    check_kafka(settings, lambda field: _setting_name(field, given, "CDC_"))
    sf_env = {
        k[10:].lower(): v
        for k, v in environ.items()
        if k.upper().startswith("SNOWFLAKE_") and v != ""
    }
    if "schema" in sf_env:
        sf_env["SNOWFLAKE_SCHEMA"] = sf_env.pop("schema")
    try:
        snowflake = SnowflakeSettings.model_validate(sf_env)
    except ValidationError as exc:
        raise _first_error(exc, {}, "SNOWFLAKE_") from None
    return Config(
        settings=settings, snowflake=snowflake, explicit=frozenset(values), flags=frozenset(given)
    )
