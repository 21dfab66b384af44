"""Signing in: key pairs, files of credentials, and every way it can fail, as one clean line."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from service.pipeline.generator import replay

from .conftest import START, cli, config, identity
from .emulator import Gate, Server

EVENTS = "300"
PASSWORD = "s3cret-Pa55word-never-logged"  # noqa: S105 (a test secret, grepped for in output)
PASSPHRASE = "key-passphrase-never-logged"  # noqa: S105


def _run(
    env: dict[str, str], *extra: str, events: str = EVENTS
) -> subprocess.CompletedProcess[str]:
    return cli(
        "run", "--events", events, "--seed", "7", "--start", START, *extra, env=env, timeout=120
    )


def _lines(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]


def assert_clean(proc: subprocess.CompletedProcess[str], *secrets: str) -> None:
    """No traceback, and no secret in any line of output (stdout and stderr)."""
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    for secret in secrets:
        assert secret not in out, f"a secret leaked: {secret[:12]}..."


def assert_one_failure_line(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 1 with exactly one error line, ``service.failed``, that says what went wrong."""
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [e for e in _lines(proc) if e["level"] in ("error", "critical")]
    assert [e["event"] for e in errors] == ["service.failed"], errors
    message = str(errors[0]["error"])
    for word in words:
        assert word in message, message
    return message


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, bytes]:
    """An encrypted PKCS#8 key file, its public key, and its unencrypted PEM body."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("keys") / "rsa_key.p8"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
    )
    plain = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return path, key.public_key(), plain


def _key_lines(pem: bytes) -> list[str]:
    return [ln for ln in pem.decode().splitlines() if ln and not ln.startswith("-----")]


@pytest.fixture
def locked_server(rsa_key: tuple[Path, Any, bytes]) -> Iterator[Server]:
    """An emulator that checks a password for one user and a public key for another."""
    gate = Gate(passwords={"cdc_service": PASSWORD}, public_keys={"cdc_keypair": rsa_key[1]})
    with Server(gate) as server:
        yield server


def test_key_pair_sign_in_writes_and_never_logs_the_key(
    locked_server: Server, rsa_key: tuple[Path, Any, bytes]
) -> None:
    """SNOWFLAKE_PRIVATE_KEY_FILE (+ _PWD): a JWT the server verifies; the stream lands."""
    env = locked_server.env(
        SNOWFLAKE_USER="cdc_keypair",
        SNOWFLAKE_PRIVATE_KEY_FILE=str(rsa_key[0]),
        SNOWFLAKE_PRIVATE_KEY_FILE_PWD=PASSPHRASE,
    )
    del env["SNOWFLAKE_PASSWORD"]
    proc = _run(env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert {x["AUTHENTICATOR"] for x in locked_server.gate.logins} == {"SNOWFLAKE_JWT"}
    assert locked_server.rows() == replay(identity(7), int(EVENTS))
    assert_clean(proc, PASSPHRASE, *_key_lines(rsa_key[2]))


def test_bad_password_is_one_line_exit_1(locked_server: Server) -> None:
    """A refused password: exit 1, one line naming the account, quickly; the password never shown."""
    env = locked_server.env(SNOWFLAKE_PASSWORD="wrong-" + PASSWORD)
    started = time.monotonic()
    proc = _run(env)
    assert time.monotonic() - started < 30
    message = assert_one_failure_line(proc, "sign-in refused", "390100", "SNOWFLAKE_PASSWORD")
    assert "cdc_service" in message
    assert_clean(proc, PASSWORD)


def test_unregistered_key_is_refused_exit_1(locked_server: Server, tmp_path: Path) -> None:
    """A well-formed key whose public half is not registered: the JWT is refused, exit 1."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "other.pem"
    pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    env = locked_server.env(SNOWFLAKE_USER="cdc_keypair", SNOWFLAKE_PRIVATE_KEY_FILE=str(path))
    proc = _run(env)
    assert_one_failure_line(proc, "sign-in refused", "390144", "RSA_PUBLIC_KEY")
    assert_clean(proc, PASSWORD, *_key_lines(pem))


@pytest.mark.parametrize(
    ("content", "pwd", "setting"),
    [
        (None, None, "SNOWFLAKE_PRIVATE_KEY_FILE: "),  # missing file
        (
            b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
            None,
            "SNOWFLAKE_PRIVATE_KEY_FILE: ",
        ),  # malformed
        ("encrypted", "wrong passphrase", "SNOWFLAKE_PRIVATE_KEY_FILE: "),  # wrong passphrase
        ("encrypted", None, "SNOWFLAKE_PRIVATE_KEY_FILE_PWD: "),  # passphrase missing
    ],
    ids=["missing", "malformed", "wrong-passphrase", "no-passphrase"],
)
def test_key_file_problems_are_configuration_errors(
    content: Any, pwd: str | None, setting: str, rsa_key: tuple[Path, Any, bytes], tmp_path: Path
) -> None:
    """A missing, malformed or undecryptable key: exit 2, one line naming the variable."""
    path = tmp_path / "key.p8"
    if content == "encrypted":
        path = rsa_key[0]
    elif content is not None:
        path.write_bytes(content)
    env = {
        "SNOWFLAKE_ACCOUNT": "acme-xy12345",
        "SNOWFLAKE_USER": "cdc_keypair",
        "SNOWFLAKE_PRIVATE_KEY_FILE": str(path),
        "SNOWFLAKE_LOGIN_TIMEOUT": "5",
    }
    if pwd:
        env["SNOWFLAKE_PRIVATE_KEY_FILE_PWD"] = pwd
    proc = _run(env)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ecomm-cdc: error: " + setting), proc.stderr
    assert_clean(proc, PASSPHRASE, *([pwd] if pwd else []), *_key_lines(rsa_key[2]))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_account_gives_up_within_the_login_timeout() -> None:
    """Nothing listening: exit 1 after about SNOWFLAKE_LOGIN_TIMEOUT seconds, one line."""
    env = {
        "SNOWFLAKE_ACCOUNT": "acme-xy12345",
        "SNOWFLAKE_USER": "cdc",
        "SNOWFLAKE_PASSWORD": PASSWORD,
        "SNOWFLAKE_HOST": "127.0.0.1",
        "SNOWFLAKE_PORT": str(_closed_port()),
        "SNOWFLAKE_PROTOCOL": "http",
        "SNOWFLAKE_LOGIN_TIMEOUT": "4",
    }
    started = time.monotonic()
    proc = _run(env)
    elapsed = time.monotonic() - started
    assert_one_failure_line(proc, "cannot reach", "acme-xy12345", "SNOWFLAKE_LOGIN_TIMEOUT")
    assert elapsed < 4 + 10, elapsed  # the timeout, plus the interpreter's start
    assert_clean(proc, PASSWORD)


def test_silent_account_gives_up_within_the_login_timeout() -> None:
    """A host that accepts the connection and never answers: still bounded by the login timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # never accepted, never answered
        env = {
            "SNOWFLAKE_ACCOUNT": "acme-xy12345",
            "SNOWFLAKE_USER": "cdc",
            "SNOWFLAKE_PASSWORD": PASSWORD,
            "SNOWFLAKE_HOST": "127.0.0.1",
            "SNOWFLAKE_PORT": str(silent.getsockname()[1]),
            "SNOWFLAKE_PROTOCOL": "http",
            "SNOWFLAKE_LOGIN_TIMEOUT": "3",
        }
        started = time.monotonic()
        proc = _run(env)
        elapsed = time.monotonic() - started
    assert_one_failure_line(proc, "cannot reach")
    assert elapsed < 3 + 10, elapsed
    assert_clean(proc, PASSWORD)


def test_default_login_timeout_is_at_most_60_seconds() -> None:
    """Without SNOWFLAKE_LOGIN_TIMEOUT an unreachable account is given up on within 60 s."""
    spec = config(
        {"SNOWFLAKE_ACCOUNT": "a", "SNOWFLAKE_USER": "u", "SNOWFLAKE_PASSWORD": "p"}
    ).snowflake_spec()
    assert spec.login_timeout <= 60
    assert spec.kwargs(False, "t")["login_timeout"] <= 60
    assert PASSWORD not in repr(spec) and "'p'" not in repr(spec)


def test_credentials_file_of_the_original_project(tmp_path: Path) -> None:
    """--credentials snowflake_credentials.json: its user, password and names are used."""
    with Server(Gate(passwords={"seed_user": PASSWORD})) as server:
        creds = tmp_path / "snowflake_credentials.json"
        creds.write_text(
            json.dumps(
                {
                    "user": "seed_user",
                    "password": PASSWORD,
                    "account": "acme-xy12345",
                    "warehouse": "COMPUTE_WH",
                    "database": "SEEDDB",
                    "schema": "RAW",
                }
            )
        )
        env = {k: v for k, v in server.env().items() if k.endswith(("HOST", "PORT", "PROTOCOL"))}
        proc = _run(env, "--target", "snowflake", "--credentials", str(creds))
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        connected = next(e for e in _lines(proc) if e["event"] == "sink.connected")
        assert (connected["database"], connected["schema"], connected["user"]) == (
            "SEEDDB",
            "RAW",
            "seed_user",
        )
        assert len(server.query("SELECT * FROM SEEDDB.RAW.raw_orders", database="SEEDDB")) == len(
            replay(identity(7), int(EVENTS))
        )
    assert_clean(proc, PASSWORD)


def test_bad_identifier_in_credentials_file_is_exit_2(tmp_path: Path) -> None:
    """A database name that is not a Snowflake identifier: exit 2, naming the file's key."""
    creds = tmp_path / "snowflake_credentials.json"
    creds.write_text(
        json.dumps(
            {
                "user": "u",
                "password": PASSWORD,
                "account": "a",
                "database": "ECOMM; DROP TABLE x",
                "schema": "PUBLIC",
            }
        )
    )
    proc = _run({}, "--target", "snowflake", "--credentials", str(creds))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("ecomm-cdc: error: --credentials (database): ")
    assert_clean(proc, PASSWORD)


def test_named_connection_from_connections_toml(tmp_path: Path) -> None:
    """--connection NAME reads the connector's own connections.toml (SNOWFLAKE_HOME)."""
    with Server(Gate(passwords={"toml_user": PASSWORD})) as server:
        home = tmp_path / "snowflake_home"
        home.mkdir()
        toml = home / "connections.toml"
        toml.write_text(
            "[emulator]\n"
            f'account = "acme-xy12345"\nuser = "toml_user"\npassword = "{PASSWORD}"\n'
            f'host = "127.0.0.1"\nport = {server.port}\nprotocol = "http"\n'
            'database = "TOMLDB"\nschema = "PUBLIC"\nwarehouse = "COMPUTE_WH"\n'
        )
        toml.chmod(0o600)
        proc = _run(
            {"SNOWFLAKE_HOME": str(home)}, "--target", "snowflake", "--connection", "emulator"
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert len(server.query("SELECT * FROM raw_orders", database="TOMLDB")) == len(
            replay(identity(7), int(EVENTS))
        )
        missing = _run(
            {"SNOWFLAKE_HOME": str(home)}, "--target", "snowflake", "--connection", "nope"
        )
    assert missing.returncode == 2
    assert "--connection: no connection named 'nope'" in missing.stderr
    assert_clean(proc, PASSWORD)
