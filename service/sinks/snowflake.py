"""Snowflake through the real connector: one connection per worker, one transaction per batch.

A batch is one transaction on the worker's own connection (autocommit off, so
there is no BEGIN round trip): the inserts as ``executemany`` (which the
connector sends as one multi-row INSERT per chunk), the updates as one
``UPDATE ... FROM (VALUES ...)`` per chunk, the deletes as one ``DELETE ... IN``
per chunk, the checkpoints as one MERGE, then COMMIT.

After an error the outcome is not known: the connector retries a request whose
reply was lost, and a timed-out request may still commit on the server. So the
writer never guesses: it rolls back what may be open, reads back the
checkpoint of one of the batch's partitions (written in the same transaction,
so all of them commit together), and re-applies the batch only if it is not
there. ``raw_orders`` keeps its primary key: the emulator enforces it, which
turns any replayed INSERT into an error (then resolved as above) instead of a
duplicate row. Real Snowflake does not enforce it, so the INSERT
is never re-sent by the connector (see :func:`execute`); UPDATE, DELETE and the
MERGE write after-images and may be.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import snowflake.connector
import stamina
from pydantic import SecretStr

from .. import logs, sqlfiles
from ..config import IDENTIFIER
from ..events import Batch
from . import errors
from . import snowflake_sql as q
from .base import SinkError, StoredStream, TargetConfigError

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection

    from ..config import Config, SnowflakeSettings

log = logs.get("sink")
T = TypeVar("T")

# The connector logs errors (with tracebacks) before raising them; the
# service reports each failure once, as one line, itself.
logging.getLogger("snowflake.connector").setLevel(logging.CRITICAL)

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


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a transient failure is retried before the service stops (jittered exponential)."""

    attempts: int = 10
    timeout: float = 600.0
    wait_initial: float = 0.5
    wait_max: float = 30.0
    wait_jitter: float = 1.0


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

    @property
    def where(self) -> str:
        host = self.host or f"{self.account}.snowflakecomputing.com"
        return f"{self.protocol or 'https'}://{host}:{self.port or 443}"

    def kwargs(self, autocommit: bool, tag: str) -> dict[str, Any]:
        """Arguments for ``snowflake.connector.connect``: UTC, a login timeout, pyformat."""
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
            "application": "ecomm-cdc",
            "session_parameters": {"QUERY_TAG": f"ecomm-cdc {tag}"},
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


# -- configuration -------------------------------------------------------------


def _credentials_file(path: Path) -> dict[str, Any]:
    """The original project's snowflake_credentials.json."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TargetConfigError("--credentials", f"{path}: no such file") from None
    except OSError as exc:
        raise TargetConfigError("--credentials", f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise TargetConfigError("--credentials", f"{path}: not JSON ({exc.args[0]})") from None
    if not isinstance(data, dict):
        raise TargetConfigError("--credentials", f"{path}: expected a JSON object")
    return {k: data[k] for k in _FILE_KEYS if data.get(k) not in (None, "")}


def _connections_toml(name: str) -> dict[str, Any]:
    """A named connection from the connector's own connections.toml."""
    from snowflake.connector.config_manager import CONFIG_MANAGER
    from snowflake.connector.constants import CONNECTIONS_FILE

    try:
        connections: Any = CONFIG_MANAGER["connections"]
    except Exception as exc:  # the connector's own config errors, TOML syntax errors
        raise TargetConfigError("--connection", f"cannot read {CONNECTIONS_FILE}: {exc}") from None
    if name not in connections:
        raise TargetConfigError(
            "--connection", f"no connection named {name!r} in {CONNECTIONS_FILE}"
        )
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
        raise TargetConfigError(setting, f"{path}: no such file") from None
    except OSError as exc:
        raise TargetConfigError(setting, f"{path}: {exc.strerror}") from None
    pwd = passphrase.get_secret_value().encode() if passphrase else None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=pwd)
        else:
            key = serialization.load_der_private_key(data, password=pwd)
    except TypeError:
        if pwd is None:
            raise TargetConfigError(
                pwd_setting, "the key is encrypted: give its passphrase"
            ) from None
        raise TargetConfigError(pwd_setting, "is set, but the key is not encrypted") from None
    except Exception:  # ValueError, UnsupportedAlgorithm: bad data or a wrong passphrase
        if pwd is not None:
            raise TargetConfigError(
                setting, f"{path}: not a private key, or {pwd_setting} does not decrypt it"
            ) from None
        raise TargetConfigError(setting, f"{path}: not a PEM or DER private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TargetConfigError(setting, f"{path}: Snowflake key-pair sign-in needs an RSA key")
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _identifier(value: Any, setting: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise TargetConfigError(setting, f"{value!r} is not a valid Snowflake identifier")
    return value


def connection_spec(config: Config) -> ConnectionSpec:
    """Merge --credentials / --connection (they win, as flags do) over the SNOWFLAKE_* variables.

    Names are validated as identifiers here, once; a missing or bad value is
    a :class:`TargetConfigError` naming the flag or variable to fix.
    """
    env: SnowflakeSettings = config.snowflake
    s = config.settings
    given: dict[str, Any] = {}
    source = "SNOWFLAKE_"
    if s.credentials is not None:
        given, source = _credentials_file(s.credentials), "--credentials"
    if s.connection is not None:
        given, source = {**given, **_connections_toml(s.connection)}, "--connection"

    def pick(key: str) -> Any:
        if key in given:
            return given[key]
        value = getattr(env, "schema_" if key == "schema" else key)
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    def name_of(key: str) -> str:
        return f"{source} ({key})" if key in given else "SNOWFLAKE_" + key.upper()

    account, user = pick("account"), pick("user")
    if not account:
        raise TargetConfigError(
            "SNOWFLAKE_ACCOUNT",
            "is required for the snowflake target "
            "(or give --credentials FILE or --connection NAME)",
        )
    if not user:
        raise TargetConfigError("SNOWFLAKE_USER", "is required for the snowflake target")
    names = {}
    for key in ("database", "schema", "warehouse", "role"):
        value = pick(key)
        names[key] = None if value in (None, "") else _identifier(value, name_of(key))
    key_file, password = pick("private_key_file"), pick("password")
    private_key = None
    if key_file:
        pwd = pick("private_key_file_pwd")
        private_key = load_private_key(Path(key_file), SecretStr(pwd) if pwd else None)
    authenticator = pick("authenticator")
    if private_key is None and not password and not authenticator:
        raise TargetConfigError(
            "SNOWFLAKE_PASSWORD",
            "no password: set it, or SNOWFLAKE_PRIVATE_KEY_FILE for key-pair sign-in",
        )
    port = pick("port")
    try:
        port = None if port in (None, "") else int(port)
    except (TypeError, ValueError):
        raise TargetConfigError(name_of("port"), f"{port!r} is not a port number") from None
    protocol = pick("protocol")
    if protocol not in (None, "http", "https"):
        raise TargetConfigError(name_of("protocol"), f"{protocol!r}: expected http or https")
    return ConnectionSpec(
        account=str(account),
        user=str(user),
        database=names["database"] or "ECOMM",
        schema=names["schema"] or "PUBLIC",
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


# -- connections ---------------------------------------------------------------


class LoginTimeout(TimeoutError):
    """No answer to the sign-in within the login timeout."""


class NoReply(ConnectionError):
    """A statement sent without the connector's retries got no usable reply: outcome unknown."""


def execute(cur: Any, st: q.Statement) -> None:
    """Run one statement. One that is not replayable is sent once, never re-sent by the connector.

    The connector re-sends a request whose reply was lost; for an INSERT that
    would add the rows twice in the transaction (Snowflake does not enforce the
    primary key). With ``_no_retry`` (the cursor's documented switch) a lost
    reply surfaces here instead, and the writer settles it by reading back the
    checkpoint. In that mode the connector may also swallow an HTTP error and
    hand back an empty reply, which it then fails to parse: that is a lost
    reply too.
    """
    run = cur.executemany if st.many else cur.execute
    if st.replayable:
        run(st.sql, st.params)
        return
    try:
        run(st.sql, st.params, _no_retry=True)
    except (KeyError, TypeError) as exc:
        raise NoReply(f"no usable reply to {st.verb} ({type(exc).__name__}: {exc})") from None


def open_connection(spec: ConnectionSpec, *, autocommit: bool, tag: str) -> SnowflakeConnection:
    """Sign in, giving up after ``spec.login_timeout`` seconds whatever the network does.

    The connector bounds its own login retries by the login timeout, but a
    single request can hang past it (a black-holed address): the sign-in runs
    on a daemon thread, and a late success is closed.
    """
    box: dict[str, Any] = {}
    done, abandoned = threading.Event(), threading.Event()
    kwargs = spec.kwargs(autocommit, tag)

    def login() -> None:
        try:
            conn = snowflake.connector.connect(**kwargs)
        except BaseException as exc:
            box["error"] = exc
        else:
            box["conn"] = conn
            if abandoned.is_set():
                _close_quietly(conn)
        finally:
            done.set()

    threading.Thread(target=login, name=f"snowflake-login-{tag}", daemon=True).start()
    if not done.wait(spec.login_timeout):
        abandoned.set()
        if "conn" in box:
            _close_quietly(box["conn"])
        raise LoginTimeout(f"no answer from {spec.where} within {spec.login_timeout:g} s")
    if "error" in box:
        raise box["error"]
    conn: SnowflakeConnection = box["conn"]
    return conn


def _close_quietly(conn: Any) -> None:
    try:
        conn.close(retry=False)
    except Exception as exc:  # a broken connection cannot say goodbye; the server times it out
        log.debug("sink.close_failed", error=errors.describe(exc))


def _signin_error(spec: ConnectionSpec, exc: BaseException) -> SinkError:
    if isinstance(exc, SinkError):
        return exc
    who = f"account {spec.account!r} as user {spec.user!r} at {spec.where}"
    if errors.is_auth(exc):
        return errors.terminal(exc, f"sign-in refused for {who}")
    if isinstance(exc, LoginTimeout) or errors.is_transient(exc):
        return SinkError(
            f"cannot reach Snowflake {who} within the login timeout "
            f"({spec.login_timeout:g} s, SNOWFLAKE_LOGIN_TIMEOUT): {errors.describe(exc)}"
        )
    return errors.terminal(exc, f"cannot sign in to {who}")


def retrying(policy: RetryPolicy, fn: Callable[[], T], doing: str) -> T:
    """Run ``fn``, retrying transient errors under ``policy``; anything else stops the service."""
    started = time.monotonic()
    attempts = 0
    try:
        for attempt in stamina.retry_context(
            on=errors.is_transient,
            attempts=policy.attempts,
            timeout=policy.timeout,
            wait_initial=policy.wait_initial,
            wait_max=policy.wait_max,
            wait_jitter=policy.wait_jitter,
        ):
            with attempt:
                attempts = attempt.num
                return fn()
    except Exception as exc:
        if errors.is_transient(exc):
            raise SinkError(
                f"{doing}: gave up after {attempts} attempts in "
                f"{time.monotonic() - started:.0f} s: {errors.describe(exc)}"
            ) from None
        raise errors.terminal(exc, doing) from None
    raise AssertionError("unreachable")  # pragma: no cover


# -- the writer ----------------------------------------------------------------


class SnowflakeWriter:
    """One worker's connection and its batches. Created and used on the worker's thread."""

    def __init__(
        self,
        spec: ConnectionSpec,
        shard: str,
        worker: int,
        *,
        policy: RetryPolicy,
        chunk_rows: int,
        conn: SnowflakeConnection,
    ) -> None:
        self._spec = spec
        self._shard = shard
        self._worker = worker
        self._policy = policy
        self._chunk_rows = chunk_rows
        self._conn: SnowflakeConnection | None = conn
        # The current batch may have been (partly) sent: its outcome must be read back.
        self._unsure = False
        self.reconnects = 0
        self.resolved_committed = 0
        self.retries = 0

    def apply(self, batch: Batch) -> None:
        attempts = 0

        def once() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                self.retries += 1  # the consumer reports these as cdc_apply_retries_total
            self._apply_once(batch)

        retrying(
            self._policy,
            once,
            f"worker {self._worker}: batch up to seq {batch.last_seq} not applied "
            "(it stays ahead of the checkpoint)",
        )

    def _apply_once(self, batch: Batch) -> None:
        try:
            conn = self._conn or self._reconnect()
            cur = conn.cursor()
            if self._unsure:
                conn.rollback()
                if self._committed(cur, batch):
                    self._unsure = False
                    self.resolved_committed += 1
                    log.info(
                        "sink.batch_resolved",
                        worker=self._worker,
                        outcome="committed",
                        last_seq=batch.last_seq,
                    )
                    return
                log.info(
                    "sink.batch_resolved",
                    worker=self._worker,
                    outcome="not committed",
                    last_seq=batch.last_seq,
                )
            self._unsure = True
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            for st in q.plan(batch, self._shard, now, self._chunk_rows):
                execute(cur, st)
            conn.commit()
            self._unsure = False
        except Exception as exc:
            transient = errors.is_transient(exc)
            log.warning(
                "sink.batch_failed",
                worker=self._worker,
                transient=transient,
                error=errors.describe(exc),
                last_seq=batch.last_seq,
            )
            if not transient or errors.session_gone(exc):
                self._drop()
            raise

    def _committed(self, cur: Any, batch: Batch) -> bool:
        """Did this batch commit? Its checkpoints commit with it, all or none."""
        partition, seq = next(iter(batch.checkpoints.items()))
        cur.execute(q.READ_CHECKPOINT, (self._shard, partition))
        row = cur.fetchone()
        return row is not None and int(row[0]) >= seq

    def _reconnect(self) -> SnowflakeConnection:
        self._conn = open_connection(self._spec, autocommit=False, tag=f"worker-{self._worker}")
        self.reconnects += 1
        log.info("sink.reconnected", worker=self._worker, reconnects=self.reconnects)
        return self._conn

    def _drop(self) -> None:
        """Close the connection (which ends its open transaction); the next attempt reopens."""
        if self._conn is not None:
            _close_quietly(self._conn)
            self._conn = None

    def close(self) -> None:
        self._drop()


# -- the sink ------------------------------------------------------------------


class SnowflakeSink:
    """Snowflake (or anything that speaks its HTTP API), through the real connector."""

    name = "snowflake"
    dialect = "snowflake"
    local_warehouse = False

    def __init__(
        self, config: Config, *, policy: RetryPolicy | None = None, chunk_rows: int = q.MAX_LIST
    ) -> None:
        self._config = config
        self.shard = config.settings.shard
        env = config.snowflake
        self.names: dict[str, str] = {
            "warehouse": env.warehouse or "COMPUTE_WH",
            "database": env.database,
            "schema": env.schema_,
        }
        self.policy = policy or RetryPolicy()
        self.chunk_rows = chunk_rows
        self._spec: ConnectionSpec | None = None
        self._conn: SnowflakeConnection | None = None
        self._lock = threading.Lock()

    # -- set-up ------------------------------------------------------------------

    def make_spec(self) -> ConnectionSpec:
        return connection_spec(self._config)

    @property
    def spec(self) -> ConnectionSpec:
        if self._spec is None:
            raise SinkError(f"the {self.name} sink is not open")
        return self._spec

    def open(self) -> None:
        spec = self._spec = self.make_spec()
        self.names = {
            "warehouse": spec.warehouse or "COMPUTE_WH",
            "database": spec.database,
            "schema": spec.schema,
        }
        try:
            self._conn = open_connection(spec, autocommit=False, tag="control")
        except Exception as exc:
            raise _signin_error(spec, exc) from None
        log.info(
            "sink.connected",
            target=self.name,
            where=spec.where,
            account=spec.account,
            user=spec.user,
            database=spec.database,
            schema=spec.schema,
            warehouse=spec.warehouse,
            auth="key-pair" if spec.private_key else "password",
        )
        retrying(self.policy, self._prepare, "cannot create the tables")

    def _prepare(self) -> None:
        cur = self.control.cursor()
        db, schema = self.spec.database, self.spec.schema
        try:
            cur.execute(f"USE SCHEMA {db}.{schema}")
        except snowflake.connector.errors.ProgrammingError:
            for sql in q.use_schema(db, schema):  # first run on a fresh account
                cur.execute(sql)
        for sql in sqlfiles.statements("00", self.names, dialect="snowflake"):
            cur.execute(sql)
        self.control.commit()

    @property
    def control(self) -> SnowflakeConnection:
        if self._conn is None:
            raise SinkError(f"the {self.name} sink is not open")
        return self._conn

    def _control_retrying(self, fn: Callable[[Any], T], doing: str) -> T:
        """``fn(cursor)`` as one transaction on the control connection, reopened if it broke."""

        def once() -> T:
            with self._lock:
                if self._conn is None:
                    self._conn = open_connection(self.spec, autocommit=False, tag="control")
                conn = self._conn
                try:
                    result = fn(conn.cursor())
                    conn.commit()
                    return result
                except Exception as exc:
                    if errors.session_gone(exc):
                        _close_quietly(conn)
                        self._conn = None
                    else:
                        try:
                            conn.rollback()
                        except Exception as again:
                            log.debug("sink.rollback_failed", error=errors.describe(again))
                    raise

        return retrying(self.policy, once, doing)

    # -- the stream ----------------------------------------------------------------

    def load_stream(self) -> StoredStream:
        def read(cur: Any) -> StoredStream:
            cur.execute(q.READ_IDENTITY, (self.shard,))
            row = cur.fetchone()
            cur.execute(q.READ_CHECKPOINTS, (self.shard,))
            ckpts = {int(p): int(s) for p, s in cur.fetchall()}
            return StoredStream(row[0] if row else None, ckpts)

        return self._control_retrying(read, "cannot read the stored stream")

    def save_stream(self, identity: str, reset: bool) -> None:
        def save(cur: Any) -> None:
            statements = q.reset_shard(self.shard) if reset else []
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            for st in [*statements, q.save_identity(self.shard, identity, now)]:
                cur.execute(st.sql, st.params)

        self._control_retrying(save, "cannot record the stream")

    # -- workers and ad-hoc SQL ----------------------------------------------------

    def writer(self, worker: int) -> SnowflakeWriter:
        spec = self.spec
        conn = retrying(
            self.policy,
            lambda: open_connection(spec, autocommit=False, tag=f"worker-{worker}"),
            f"worker {worker}: cannot connect",
        )
        return SnowflakeWriter(
            spec, self.shard, worker, policy=self.policy, chunk_rows=self.chunk_rows, conn=conn
        )

    def connect_sql(self) -> SnowflakeConnection:
        """A new connection (autocommit, UTC, the database and schema selected)."""
        spec = self.spec
        try:
            return open_connection(spec, autocommit=True, tag="sql")
        except Exception as exc:
            raise _signin_error(spec, exc) from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                _close_quietly(self._conn)
                self._conn = None
