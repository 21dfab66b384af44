"""``--target emulator``: a fakesnow server in this process, and the Snowflake sink against it.

fakesnow serves Snowflake's HTTP API from DuckDB, so the very same sink runs
through the real connector over HTTP. The server listens on 127.0.0.1 on a
free port, logged at start (``emulator.listening``) so a person can point
another client at it during the run. State is in memory unless
``CDC_EMULATOR_PATH`` names a folder. In front of fakesnow sits
:class:`~.account.Layer`: what a Snowflake account keeps beside its tables
(sessions, their transactions and aborts, statement timeouts, dynamic tables and
their refresh modes, tasks), which fakesnow lacks. ``ecomm-cdc emulator`` serves
the same on its own, in a process that outlives its clients, as Snowflake does.

We start uvicorn ourselves rather than through ``fakesnow.server()``: that
helper imports ``fakesnow.server`` inside, which rebinds the name to the
module after its first call, and it offers no way to pass a bound socket or
quieten the access log. fakesnow keeps its database in a module global
(``fakesnow.server.shared_fs``), so one emulator runs per process at a time.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from ... import logs
from ...config import DEFAULT_DATABASE, DEFAULT_SCHEMA, DEFAULT_WAREHOUSE, ConnectionSpec
from ...retry import Observer, RetryPolicy
from ..base import TargetConfigError, Warehouse
from ..snowflake.sink import SnowflakeSink
from ..snowflake.sql import MAX_LIST
from .account import Account
from .layer import Layer

if TYPE_CHECKING:
    from ...config import Config

log = logs.get("emulator")

#: What the emulator accepts (it accepts anything; these are what we send).
USER, PASSWORD, ACCOUNT = "cdc", "emulator", "emulator"


def _quiet() -> None:
    """uvicorn logs every request, fakesnow every failed statement (with a traceback)."""
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error", "fakesnow", "fakesnow.server"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module="fakesnow")


def fakesnow_server() -> Any:
    """The ``fakesnow.server`` module (the package also has a function of that name)."""
    return importlib.import_module("fakesnow.server")


class Emulator:
    """A fakesnow server on a daemon thread, behind the account layer.

    ``app`` replaces the layered app (tests wrap it to record and break requests).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        path: Path | None = None,
        app: Any = None,
        account: Account | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.account = account or Account()
        self._app = app
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        try:
            import fakesnow.instance
            import uvicorn
        except ImportError:
            raise TargetConfigError(
                "--target", "the emulator needs fakesnow: pip install 'ecomm-cdc[emulator]'"
            ) from None
        server_module = fakesnow_server()
        _quiet()  # after the import: fakesnow.server sets its own logger to INFO on import
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
        # A fresh database per start; in a folder, the same files across restarts.
        server_module.shared_fs = fakesnow.instance.FakeSnow(db_path=self.path)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        app = self._app or Layer(server_module.app, self.account)
        config = uvicorn.Config(app, log_level="critical", access_log=False, lifespan="off")
        server = self._server = uvicorn.Server(config)
        thread = self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fakesnow", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start on {self.host}:{self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = self._thread = None

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spec(
        self,
        database: str = DEFAULT_DATABASE,
        schema: str = DEFAULT_SCHEMA,
        warehouse: str | None = DEFAULT_WAREHOUSE,
        network_timeout: float = 10.0,
    ) -> ConnectionSpec:
        """How the sink (or anyone) connects to this server."""
        return ConnectionSpec(
            account=ACCOUNT,
            user=USER,
            password=SecretStr(PASSWORD),
            database=database,
            schema=schema,
            warehouse=warehouse,
            host=self.host,
            port=self.port,
            protocol="http",
            login_timeout=30.0,
            network_timeout=network_timeout,
            telemetry=False,
        )


class EmulatorSink(SnowflakeSink):
    """The Snowflake sink against an in-process emulator it starts and stops."""

    name = "emulator"
    warehouse = Warehouse.LOCAL  # no dynamic tables or tasks: the service refreshes the layers

    def __init__(
        self,
        config: Config,
        *,
        policy: RetryPolicy | None = None,
        chunk_rows: int = MAX_LIST,
        server: Emulator | None = None,
        observer: Observer | None = None,
    ) -> None:
        super().__init__(config, policy=policy, chunk_rows=chunk_rows, observer=observer)
        self.server = server or Emulator(path=config.settings.emulator_path)
        self._owns_server = server is None

    def make_spec(self) -> ConnectionSpec:
        env = self._config.snowflake
        # A statement the connector replays after a lost reply fails on the primary key
        # and is retried as HTTP 500 until the network timeout: keep that short here.
        spec = self.server.spec(
            env.database, env.schema_, env.warehouse, network_timeout=min(env.network_timeout, 10.0)
        )
        s = self._config.settings
        return dataclasses.replace(
            spec, lock_timeout=s.lock_timeout, statement_timeout=s.statement_timeout
        )

    def open(self) -> None:
        if self._owns_server:
            self.server.start()
            log.info(
                "emulator.listening",
                url=self.server.url,
                host=self.server.host,
                port=self.server.port,
                persisted_in=str(self.server.path or "memory"),
                connect=f"SNOWFLAKE_HOST={self.server.host} SNOWFLAKE_PORT={self.server.port} "
                "SNOWFLAKE_PROTOCOL=http (any account, user and password)",
            )
        super().open()

    def close(self) -> None:
        super().close()
        if self._owns_server:
            self.server.stop()


def serve(ns: Any) -> int:
    """``ecomm-cdc emulator``: serve until SIGTERM or SIGINT, in a process of its own.

    Its sessions outlive the processes that open them, as Snowflake's do: a client
    killed in the middle of a transaction leaves it open, with its locks, until it is
    aborted (:mod:`.account`). Exit 2 when the port cannot be had.
    """
    import os
    import signal

    logs.configure(os.environ.get("CDC_LOG_FORMAT", "auto"), "info")
    path = ns.emulator_path or os.environ.get("CDC_EMULATOR_PATH") or None
    account = Account(execute_task=not ns.no_execute_task, task_speed=ns.task_speed)
    server = Emulator(ns.host, ns.port, Path(path) if path else None, account=account)
    try:
        server.start()
    except OSError as exc:
        print(f"ecomm-cdc: error: --port {ns.port}: {exc.strerror}", flush=True)
        return 2
    log.info(
        "emulator.listening",
        url=server.url,
        host=server.host,
        port=server.port,
        persisted_in=str(server.path or "memory"),
        connect=f"SNOWFLAKE_HOST={server.host} SNOWFLAKE_PORT={server.port} "
        "SNOWFLAKE_PROTOCOL=http (any account, user and password)",
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    log.info("emulator.stopped")
    return 0
