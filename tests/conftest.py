"""Shared fixtures: settings passed in, never read from the real environment."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from service.config import Config, load
from service.pipeline.generator import GeneratorSettings, StreamIdentity

START = "2026-01-01T00:00:00"
START_EPOCH = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())


def identity(seed: int = 7, shard: str = "0", partitions: int = 64) -> StreamIdentity:
    return StreamIdentity(seed, START_EPOCH, shard, partitions, GeneratorSettings())


def config(env: Mapping[str, str] | None = None, **flags: Any) -> Config:
    base = {"seed": 7, "start": START, "http_port": 0, "log_format": "json"}
    return load({**base, **flags}, dict(env or {}))


def cli(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m service`` as a real process; environment clean of CDC_/SNOWFLAKE_."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "SNOWFLAKE_"))}
    base.update({"CDC_HTTP_PORT": "0", "CDC_LOG_FORMAT": "json"})
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=base,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ecomm.duckdb"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without CDC_/SNOWFLAKE_ settings, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "SNOWFLAKE_"))}
    base.update(CDC_LOG_FORMAT="json", CDC_HTTP_HOST="127.0.0.1", **extra)
    return base


def spawn(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``python -m service ARGS`` (or ``python -c SCRIPT ARGS`` when args[0] is ``-c``)."""
    cmd = (
        [sys.executable, *args]
        if args and args[0] == "-c"
        else [sys.executable, "-m", "service", *args]
    )
    return subprocess.Popen(
        cmd,
        env=clean_env(**dict(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
