"""The image, built and run for real with podman: non-root, read-only root, probes, SIGTERM.

Podman (and a base image) are installed by ``scripts/container-image.sh setup``
when missing; where that is impossible (no root, no apt, no mirror) every test
here is skipped and the reason printed. A failing build or run is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .test_lifecycle import free_port

pytestmark = [pytest.mark.container, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "container-image.sh"
TAG = "localhost/ecomm-cdc:test"
IMPOSSIBLE = 3  # the script's "cannot be done on this machine"

Podman = Callable[..., subprocess.CompletedProcess[str]]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env and shutil.which("runc"):
        env["CONTAINERS_CONF"] = str(ROOT / "config" / "containers.conf")
    return env


def _note(message: str) -> None:
    """A line on the real stderr, shown even when pytest captures output."""
    print(f"\n[container] {message}", file=sys.__stderr__, flush=True)


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def podman() -> Podman:
    """podman, installed (apt) with a base image when missing; skips where impossible."""
    if not shutil.which("bash"):
        pytest.skip("container test: no bash to run scripts/container-image.sh")
    t0 = time.monotonic()
    try:
        proc = _script("setup", timeout=900)
    except subprocess.TimeoutExpired:
        reason = "container test skipped: podman set-up took over 900 s"
        _note(reason)
        pytest.skip(reason)
    if proc.returncode == IMPOSSIBLE:
        lines = proc.stderr.strip().splitlines() or ["(no reason given)"]
        reason = f"container test skipped: {lines[-1]}"
        _note(reason)
        pytest.skip(reason)
    assert proc.returncode == 0, f"podman set-up failed:\n{proc.stdout}\n{proc.stderr}"
    _note(
        f"podman ready in {time.monotonic() - t0:.0f} s"
        f" ({proc.stderr.strip() or 'nothing to install'})"
    )
    env = _env()

    def run(
        *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(
                f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    return run


@pytest.fixture(scope="session")
def image(podman: Podman) -> str:
    """The image, built from this tree."""
    t0 = time.monotonic()
    proc = _script("build", TAG, timeout=1200)
    assert proc.returncode == 0, (
        f"image build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    _note(f"image {TAG} built in {time.monotonic() - t0:.0f} s")
    return TAG


@pytest.fixture
def volume(podman: Podman) -> Iterator[str]:
    name = f"ecomm-cdc-test-{uuid.uuid4().hex[:8]}"
    podman("volume", "create", name)
    try:
        yield name
    finally:
        podman("volume", "rm", "-f", name, check=False)


def _inspect(podman: Podman, image: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(podman("image", "inspect", image).stdout)
    return data[0]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 (a local URL)
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _applied_inserts(metrics: str) -> float:
    """The value of cdc_events_applied_total{op="insert"} (other labels allowed), or 0."""
    for labels, value in re.findall(r"^cdc_events_applied_total\{([^}]*)\}\s+(\S+)", metrics, re.M):
        if 'op="insert"' in labels:
            return float(value)
    return 0.0


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def test_image_config_is_non_root_exec_form_with_healthcheck(podman: Podman, image: str) -> None:
    """The image runs as uid 10001 with an exec-form entrypoint, a HEALTHCHECK, and no secrets."""
    data = _inspect(podman, image)
    config = data["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["ecomm-cdc"]
    assert config["Cmd"] == ["run"]
    assert "8080/tcp" in config.get("ExposedPorts", {})
    assert "/data" in config.get("Volumes", {})
    assert config.get("StopSignal", "SIGTERM") == "SIGTERM"
    health = data.get("Healthcheck") or config.get("Healthcheck") or {}
    assert health.get("Test", [None])[0] == "CMD", (
        "HEALTHCHECK missing (build with --format docker)"
    )
    assert any("/healthz" in part for part in health["Test"])
    env = dict(item.split("=", 1) for item in config.get("Env", []))
    assert env.get("CDC_DUCKDB_PATH") == "/data/ecomm.duckdb"
    leaked = [k for k in env if re.search(r"SNOWFLAKE|PASSWORD|TOKEN|SECRET|PIP_CERT|INDEX_URL", k)]
    assert not leaked, f"credentials or build settings baked into the image: {leaked}"
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "pip-ca" not in history and "PIP_INDEX_URL" not in history


def _offline_on(volume: str) -> tuple[str, ...]:
    """``podman run`` arguments: removed after, read-only root, no network, ``volume`` at /data."""
    return ("run", "--rm", "--read-only", "--network=none", "-v", f"{volume}:/data")


def test_bounded_run_as_non_root_on_read_only_root(podman: Podman, image: str, volume: str) -> None:
    """`ecomm-cdc run --events 1000` exits 0 on a read-only root, writing only its data volume."""
    t0 = time.monotonic()
    run = podman(
        *_offline_on(volume),
        image,
        "run",
        "--events",
        "1000",
        "--http-port",
        "0",
        timeout=180,
        check=False,
    )
    _note(f"bounded run of 1000 events: {time.monotonic() - t0:.1f} s")
    assert run.returncode == 0, (
        f"exit {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    )
    summary = [e for e in _json_lines(run.stdout) if e.get("event") == "pipeline.summary"]
    assert summary and summary[-1]["applied_total"] == 1000, run.stdout[-3000:]

    # What the run left, seen from a second container on the same volume.
    probe = r"""
import importlib.resources, importlib.util, json, os, duckdb
def writable(d):
    try:
        path = os.path.join(d, ".probe")
        open(path, "w").close()
        os.remove(path)
        return True
    except OSError:
        return False
con = duckdb.connect("/data/ecomm.duckdb", read_only=True)
st = os.stat("/data/ecomm.duckdb")
print(json.dumps({
    "uid": os.getuid(),
    "owner": st.st_uid,
    "tables": sorted(r[0] for r in con.execute("SHOW TABLES").fetchall()),
    "rows": con.execute("SELECT count(*) FROM raw_orders").fetchone()[0],
    "sql": sorted(p.name for p in importlib.resources.files("service.sql").iterdir()
                  if p.name.endswith(".sql")),
    "writable": {d: writable(d) for d in ("/", "/opt/venv", "/etc", "/data", "/tmp")},
    "snowflake": importlib.util.find_spec("snowflake.connector") is not None,
}))
"""
    seen = podman(
        *_offline_on(volume),
        "--entrypoint",
        "python3",
        image,
        "-c",
        probe,
        timeout=120,
    )
    facts = json.loads(seen.stdout.strip().splitlines()[-1])
    assert facts["uid"] == 10001 and facts["owner"] == 10001
    assert {"raw_orders", "cdc_checkpoints"} <= set(facts["tables"])
    assert facts["rows"] > 0
    assert facts["sql"] == sorted(p.name for p in (ROOT / "sql").glob("*.sql")), (
        "sql/ not shipped in the package"
    )
    assert facts["writable"] == {
        "/": False,
        "/opt/venv": False,
        "/etc": False,
        "/data": True,
        "/tmp": True,  # noqa: S108 (a path in the container)
    }
    assert facts["snowflake"], "the Snowflake connector is missing from the image"


def test_service_ready_metrics_and_sigterm_exit_0(podman: Podman, image: str) -> None:
    """Run as is: probes, metrics, the dashboard, `query` via the service; SIGTERM exits 0."""
    name = f"ecomm-cdc-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    podman(
        "run",
        "-d",
        "--name",
        name,
        "--read-only",
        "--tmpfs",
        "/data:rw,size=512m,U",
        "-p",
        f"127.0.0.1:{port}:8080",
        image,
        timeout=120,
    )
    try:

        def logs() -> str:
            done = podman("logs", name, check=False)
            return (done.stdout + done.stderr)[-4000:]

        def wait_for(what: str, check: Callable[[], bool], limit: float) -> None:
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                state = podman("inspect", name, "--format", "{{.State.Status}}").stdout.strip()
                if state != "running":
                    pytest.fail(f"container {state} while waiting for {what}:\n{logs()}")
                try:
                    if check():
                        return
                except OSError:
                    pass  # not listening yet
                time.sleep(0.5)
            pytest.fail(f"no {what} within {limit:.0f} s:\n{logs()}")

        wait_for("/readyz 200", lambda: _get(base + "/readyz")[0] == 200, 90)
        ready_s = time.monotonic() - t0
        wait_for(
            'cdc_events_applied_total{op="insert"} > 0',
            lambda: _applied_inserts(_get(base + "/metrics")[1]) > 0,
            60,
        )
        assert _get(base + "/healthz")[0] == 200
        # The dashboard and its assets come from the read-only image itself.
        status, page = _get(base + "/")
        assert status == 200 and "/static/dashboard.js" in page, page[:500]
        for asset, marker in (("dashboard.js", "/api/live"), ("dashboard.css", "--insert")):
            status, body = _get(f"{base}/static/{asset}")
            assert status == 200 and marker in body, (asset, status)
        status, live = _get(base + "/api/live")
        assert status == 200 and json.loads(live)["target"] == "duckdb"
        # A command in the container, on the locked file, goes through the running service.
        asked = podman("exec", name, "ecomm-cdc", "query", "SELECT count(*) FROM raw_orders")
        assert "1 rows" in asked.stdout, asked.stdout + asked.stderr
        health = podman("healthcheck", "run", name, check=False)
        assert health.returncode == 0, f"HEALTHCHECK failed: {health.stdout}{health.stderr}"

        t_stop = time.monotonic()
        podman("stop", "-t", "30", name, timeout=90)
        stop_s = time.monotonic() - t_stop
        code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        _note(f"ready after {ready_s:.1f} s; SIGTERM to exit took {stop_s:.1f} s; exit code {code}")
        assert code == "0", f"exit code {code} after SIGTERM:\n{logs()}"
        assert stop_s < 30, "the drain ran into podman's 30 s kill"
    finally:
        podman("rm", "-f", "-v", name, check=False)
