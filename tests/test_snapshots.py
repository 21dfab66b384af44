"""Generator snapshots: a cache of a pure function's state, so using one or not changes nothing.

A stream continued from a snapshot hands out exactly the events of a fresh one; a
snapshot of another stream or generator version is refused; the target keeps a few
per shard beside the checkpoints, and a restart continues from the newest one that
every partition has passed (DuckDB, the emulator, after SIGKILLs), or regenerates
from seq 1 when there is none (a target from before snapshots).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from service.pipeline import checkpoint, generator, producer, resume
from service.pipeline.events import Changes
from service.pipeline.generator import (
    BLOCK,
    GeneratorSettings,
    OrderStream,
    SnapshotError,
    StreamIdentity,
    replay,
)
from service.retry import Phase
from service.runner import Service
from service.sinks.duckdb import DuckDBSink, DuckSession
from service.sinks.emulator import EmulatorSink
from service.sinks.null import NullSink

from .conftest import START, START_EPOCH, config, identity, spawn
from .emulator import Gate, Server
from .helpers import duckdb_checkpoints, duckdb_rows
from .test_crash import kill_after_commits

COLUMNS = ("seq", "op", "order_no", "customer", "ts", "status", "cents", "product", "quantity")
TINY = GeneratorSettings(active_orders=100)  # a ring smaller than a block
SMALL = GeneratorSettings(active_orders=1_500)
#: Snapshots this often in the tests (the service's default is 1,048,576 events).
EVERY = 4 * BLOCK


DEFAULT = GeneratorSettings()


def stream_of(settings: GeneratorSettings = DEFAULT, seed: int = 7) -> StreamIdentity:
    return StreamIdentity(seed, START_EPOCH, "0", 64, settings)


def assert_same(a: Changes, b: Changes) -> None:
    assert a.prefix == b.prefix and len(a) == len(b)
    for name in COLUMNS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def drawn(ident: StreamIdentity, blocks: int) -> OrderStream:
    """A stream after ``blocks`` blocks, taken in uneven steps."""
    stream = OrderStream(ident)
    while stream.seq < blocks * BLOCK:
        stream.take_changes(min(777, blocks * BLOCK - stream.seq))
    return stream


# -- the generator -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "blocks"),
    [
        (GeneratorSettings(), 0),
        (GeneratorSettings(), 1),
        (GeneratorSettings(), 3),
        (GeneratorSettings(), 40),
        (GeneratorSettings(), 300),
        (TINY, 1),
        (TINY, 2),
        (TINY, 50),
        (SMALL, 5),
        (SMALL, 60),
    ],
)
def test_a_stream_continued_from_a_snapshot_hands_out_the_fresh_streams_events(
    settings: GeneratorSettings, blocks: int
) -> None:
    """After n blocks, the restored stream's next events (in any chunking) equal a fresh
    stream's, column by column, and so do the counts."""
    ident = stream_of(settings)
    restored = OrderStream.from_snapshot(ident, drawn(ident, blocks).snapshot())
    assert restored.seq == blocks * BLOCK and restored.at_block_boundary
    fresh = drawn(ident, blocks)
    assert restored.counts == fresh.counts
    steps = [1, 1023, 1500, 477, 2048]
    got = Changes.concat([restored.take_changes(n) for n in steps])
    assert_same(got, fresh.take_changes(sum(steps)))
    assert restored.counts == fresh.counts
    # The prefix property: a restored stream is a suffix of the whole stream.
    whole = OrderStream(ident).take_changes(blocks * BLOCK + sum(steps))
    assert_same(got, whole.take(slice(blocks * BLOCK, None)))


def test_the_same_state_encodes_to_the_same_bytes() -> None:
    """A snapshot is a function of the state: two streams at one seq give identical bytes."""
    ident = identity()
    a, b = drawn(ident, 7), drawn(ident, 7)
    assert a.snapshot() == b.snapshot()
    assert OrderStream.from_snapshot(ident, a.snapshot()).snapshot() == a.snapshot()
    assert len(drawn(ident, 50).snapshot()) < 200_000  # the default ring, compressed


def test_a_snapshot_is_only_taken_at_a_block_boundary() -> None:
    """Inside a block (some of its events handed out) there is no snapshot."""
    stream = OrderStream(identity())
    assert stream.at_block_boundary
    stream.take_changes(1)
    assert not stream.at_block_boundary
    with pytest.raises(SnapshotError, match="inside a block"):
        stream.snapshot()
    stream.take_changes(BLOCK - 1)
    assert stream.at_block_boundary and len(stream.snapshot()) > 0


@pytest.mark.parametrize(
    "other",
    [
        stream_of(seed=8),
        StreamIdentity(7, START_EPOCH, "1", 64, GeneratorSettings()),
        StreamIdentity(7, START_EPOCH + 1, "0", 64, GeneratorSettings()),
        StreamIdentity(7, START_EPOCH, "0", 32, GeneratorSettings()),
        stream_of(SMALL),
    ],
)
def test_a_snapshot_of_another_stream_is_refused(other: StreamIdentity) -> None:
    """Another seed, shard, start, partition count or generator setting: refused."""
    blob = drawn(identity(), 3).snapshot()
    with pytest.raises(SnapshotError, match="another stream"):
        OrderStream.from_snapshot(other, blob)


def test_a_snapshot_of_another_generator_version_or_damaged_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A blob written by another generator version, cut short, or not a snapshot: refused."""
    blob = drawn(identity(), 3).snapshot()
    for bad in (blob[:-100], blob[:20], b"", b"CDCSNAP1 not zlib", b"PK\x03\x04"):
        with pytest.raises(SnapshotError):
            OrderStream.from_snapshot(identity(), bad)
    monkeypatch.setattr(generator, "GENERATOR_VERSION", generator.GENERATOR_VERSION + 1)
    with pytest.raises(SnapshotError, match=r"generator v\d+, this is v\d+"):
        OrderStream.from_snapshot(identity(), blob)


# -- the state in the target --------------------------------------------------------------


@contextlib.contextmanager
def duck_target(path: Path, shard: str = "0") -> Iterator[tuple[DuckDBSink, DuckSession]]:
    sink = DuckDBSink(path, shard)
    sink.open()
    sink.claim_stream(json.dumps(identity().as_dict()), 64, False)
    session = sink.connect_sql()
    try:
        yield sink, session
    finally:
        session.close()
        sink.close()


def stored(session: DuckSession, shard: str = "0") -> list[int]:
    rows = session.execute(
        "SELECT DISTINCT seq FROM cdc_snapshots WHERE shard = ? ORDER BY seq", [shard]
    ).fetchall()
    return [int(r[0]) for r in rows]


def test_save_and_load_the_newest_snapshot_at_or_below_a_seq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_snapshot returns the newest snapshot of this identity at seq <= upto, whole even
    when it is stored in several parts; another identity's is never returned."""
    monkeypatch.setattr(checkpoint, "SNAPSHOT_PART", 1000)  # several rows per snapshot
    blobs = {seq: random.randbytes(5000 + seq % 7) for seq in (2048, 4096, 8192)}
    with duck_target(tmp_path / "s.duckdb") as (_, session):
        for seq, blob in blobs.items():
            checkpoint.save_snapshot(session, "0", seq, "mine", blob)
        assert checkpoint.load_snapshot(session, "0", "mine", 1000) is None
        assert checkpoint.load_snapshot(session, "0", "mine", 5000) == (4096, blobs[4096])
        assert checkpoint.load_snapshot(session, "0", "mine", 10**9) == (8192, blobs[8192])
        assert checkpoint.load_snapshot(session, "0", "theirs", 10**9) is None
        assert checkpoint.load_snapshot(session, "1", "mine", 10**9) is None
        parts = session.execute("SELECT COUNT(*) FROM cdc_snapshots WHERE seq = 8192").fetchone()
        assert parts is not None and parts[0] == len(base64.b64encode(blobs[8192])) // 1000 + 1
        checkpoint.save_snapshot(session, "0", 8192, "mine", blobs[8192])  # saved again: once
        assert checkpoint.load_snapshot(session, "0", "mine", 10**9) == (8192, blobs[8192])
        # Another stream's snapshots go with the next save.
        checkpoint.save_snapshot(session, "0", 1024, "next", b"x")
        assert stored(session) == [1024]


def test_a_save_keeps_the_newest_snapshot_every_partition_passed_and_two_ahead(
    tmp_path: Path,
) -> None:
    """The one a restart would use (newest <= the lowest checkpoint) and two newer are kept."""
    assert checkpoint._stale([1, 2, 3, 4, 5, 6], 3) == [1, 2, 4]
    assert checkpoint._stale([5, 6], 3) == []
    assert checkpoint._stale([1, 2], 3) == [1]
    with duck_target(tmp_path / "s.duckdb") as (_, session):
        session.execute("UPDATE cdc_checkpoints SET last_seq = 5000")
        for seq in range(1024, 12 * 1024, 1024):
            checkpoint.save_snapshot(session, "0", seq, "mine", b"state")
        assert stored(session) == [4096, 10 * 1024, 11 * 1024]


def test_reset_drops_the_shards_snapshots(tmp_path: Path) -> None:
    """A claim with --reset drops the shard's snapshots with its rows; other shards keep theirs."""
    with duck_target(tmp_path / "s.duckdb") as (sink, session):
        checkpoint.save_snapshot(session, "0", 4096, "mine", b"state")
        checkpoint.save_snapshot(session, "7", 4096, "theirs", b"state")
        sink.claim_stream(json.dumps(identity().as_dict()), 64, True)
        assert stored(session) == [] and stored(session, "7") == [4096]


# -- restarts ---------------------------------------------------------------------------


@pytest.fixture
def often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resume, "SNAPSHOT_EVERY", EVERY)


def run_service(**flags: Any) -> Service:
    service = Service(config(**flags))
    asyncio.run(service.run())
    return service


def snapshot_seqs(db: Path) -> list[int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [int(r[0]) for r in con.execute("SELECT DISTINCT seq FROM cdc_snapshots").fetchall()]
    finally:
        con.close()


@pytest.mark.usefixtures("often")
def test_a_restart_continues_from_a_snapshot_and_ends_in_the_replay(db: Path) -> None:
    """Three runs on one DuckDB file: each restart starts from the newest snapshot every
    partition has passed, skips exactly what the target holds, and the table is the replay."""
    flags = {"duckdb_path": str(db), "target": "duckdb", "workers": 3, "batch_size": 700}
    first = run_service(events=30_000, **flags)
    assert first.stats.from_snapshot == 0 and first.snapshots
    saved = first.metrics.registry.get_sample_value("cdc_snapshots_total", {"outcome": "saved"})
    assert saved is not None and saved >= 1
    newest = first.metrics.registry.get_sample_value("cdc_snapshot_seq")
    assert newest == max(snapshot_seqs(db)) > 0
    held = min(duckdb_checkpoints(db).values())
    usable = [s for s in snapshot_seqs(db) if s <= held]
    assert usable
    second = run_service(events=45_000, **flags)
    assert second.stats.from_snapshot == max(usable)
    assert second.stats.skipped == 30_000 and second.stats.applied_total == 15_000
    assert duckdb_rows(db) == replay(identity(), 45_000)
    third = run_service(events=50_000, **{**flags, "workers": 5})
    assert third.stats.from_snapshot > second.stats.from_snapshot
    assert third.stats.skipped == 45_000 and third.stats.applied_total == 5_000
    assert duckdb_rows(db) == replay(identity(), 50_000)
    assert len(snapshot_seqs(db)) <= 1 + checkpoint.SNAPSHOTS_AHEAD


@pytest.mark.usefixtures("often")
def test_a_target_from_before_snapshots_regenerates_once_then_uses_them(db: Path) -> None:
    """No cdc_snapshots table (a target written before them): it is created at open, the
    first restart regenerates from seq 1 (saving snapshots as it goes), the next one uses one."""
    flags = {"duckdb_path": str(db), "target": "duckdb"}
    run_service(events=20_000, **flags)
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE cdc_snapshots")
    con.close()
    second = run_service(events=25_000, **flags)
    assert second.stats.from_snapshot == 0 and second.stats.skipped == 20_000
    assert snapshot_seqs(db)  # saved while fast-forwarding and producing
    third = run_service(events=30_000, **flags)
    assert third.stats.from_snapshot > 0 and third.stats.skipped == 25_000
    assert duckdb_rows(db) == replay(identity(), 30_000)


def test_a_long_fast_forward_ends_with_a_snapshot_where_it_stops(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart that regenerated many events saves a snapshot at the last block boundary
    every partition has passed, so the next restart regenerates (almost) nothing."""
    monkeypatch.setattr(producer, "SNAPSHOT_AFTER_FAST_FORWARD", BLOCK)
    flags = {"duckdb_path": str(db), "target": "duckdb"}
    run_service(events=20_000, **flags)  # snapshots every 1,048,576 events: none
    assert snapshot_seqs(db) == []
    low = min(duckdb_checkpoints(db).values())
    run_service(events=21_000, **flags)
    assert snapshot_seqs(db) == [low // BLOCK * BLOCK]
    third = run_service(events=22_000, **flags)
    assert third.stats.from_snapshot == low // BLOCK * BLOCK
    assert duckdb_rows(db) == replay(identity(), 22_000)


def test_a_due_snapshot_cuts_the_producers_step_at_a_block_boundary() -> None:
    """The step is shortened only to land on the first block boundary at or past the due seq."""
    writer = resume.SnapshotWriter(NullSink(), identity(), every=4 * BLOCK)
    assert writer.step(0, 1000) == 1000
    assert writer.step(4000, 1000) == 4 * BLOCK - 4000
    assert writer.step(4 * BLOCK - 10, 7) == 7
    assert writer.step(4 * BLOCK + 5, 5000) == BLOCK - 5  # overdue: the next boundary
    writer.also_at(2 * BLOCK)
    assert writer.step(BLOCK + 1, 5000) == BLOCK - 1
    writer.also_at(2 * BLOCK + 1)  # not a boundary: ignored
    writer.also_at(8 * BLOCK)  # past the next regular one: ignored
    assert writer.step(BLOCK + 1, 5000) == BLOCK - 1


@pytest.mark.usefixtures("often")
def test_an_unusable_snapshot_is_ignored_and_the_stream_regenerated(db: Path) -> None:
    """A damaged snapshot costs time, never correctness: the run regenerates from seq 1."""
    flags = {"duckdb_path": str(db), "target": "duckdb"}
    run_service(events=20_000, **flags)
    con = duckdb.connect(str(db))
    con.execute("UPDATE cdc_snapshots SET state = 'bm90IGEgc25hcHNob3Q='")  # "not a snapshot"
    con.close()
    second = run_service(events=24_000, **flags)
    assert second.stats.from_snapshot == 0 and second.stats.skipped == 20_000
    assert duckdb_rows(db) == replay(identity(), 24_000)


@pytest.mark.usefixtures("often")
def test_reset_drops_the_old_streams_snapshots(db: Path) -> None:
    """--reset starts another stream: the old one's snapshots are gone with its rows."""
    run_service(events=20_000, duckdb_path=str(db), target="duckdb")
    assert snapshot_seqs(db)
    run_service(events=3_000, seed=8, reset=True, duckdb_path=str(db), target="duckdb")
    assert snapshot_seqs(db) == []
    assert duckdb_rows(db) == replay(identity(seed=8), 3_000)


@pytest.mark.usefixtures("often")
def test_a_restart_on_the_emulator_continues_from_a_snapshot() -> None:
    """The Snowflake path (the real connector, fakesnow over HTTP): snapshots are saved and a
    restart uses one; the table is the replay."""
    with Server(Gate()) as server:
        results = []
        for events in (12_000, 20_000):
            cfg = config(target="emulator", events=events, workers=2, batch_size=1_500)
            service = Service(cfg, sink=EmulatorSink(cfg, server=server.emulator))
            asyncio.run(service.run())
            results.append(service.stats)
        rows = server.rows()
        kept = server.query("SELECT DISTINCT seq FROM cdc_snapshots")
    assert results[0].from_snapshot == 0 and results[1].from_snapshot > 0
    assert results[1].skipped == 12_000 and results[1].applied_total == 8_000
    assert rows == replay(identity(), 20_000)
    assert 1 <= len(kept) <= 1 + checkpoint.SNAPSHOTS_AHEAD


def test_a_snapshot_in_several_large_parts_round_trips_through_the_connector() -> None:
    """A state of ~1 MB (base64 ~1.4 MB, several parts of SNAPSHOT_PART) is stored and read
    back intact through the real connector."""
    blob = random.randbytes(1_000_000)
    with Server(Gate()) as server:
        cfg = config(target="emulator")
        sink = EmulatorSink(cfg, server=server.emulator)
        sink.open()
        try:
            sink.claim_stream(json.dumps(identity().as_dict()), 64, False)
            sink.run(
                lambda s: checkpoint.save_snapshot(s, "0", 4096, "mine", blob),
                "saving",
                Phase.STREAM,
            )
            got = sink.run(
                lambda s: checkpoint.load_snapshot(s, "0", "mine", 10**6),
                "loading",
                Phase.STREAM,
            )
        finally:
            sink.close()
    assert got == (4096, blob)


# SIGKILLs with snapshots being saved: the CLI, snapshots every 8,192 events.
OFTEN_CLI = """
import sys
from service import __main__ as cli
from service.pipeline import resume
resume.SNAPSHOT_EVERY = 8192
sys.exit(cli.main(sys.argv[1:]))
"""
N = 120_000


def start(db: Path) -> subprocess.Popen[str]:
    return spawn(
        "-c", OFTEN_CLI, "run", "--events", str(N), "--seed", "7", "--start", START,
        "--duckdb-path", str(db), "--rate", "40000", "--batch-size", "2000",
        "--flush-interval", "0.1",
        env={"CDC_HTTP_PORT": "0", "CDC_LOG_LEVEL": "debug"},
    )  # fmt: skip


def test_sigkill_while_snapshots_are_saved_then_resume_gives_the_identical_table(
    tmp_path: Path,
) -> None:
    """Two SIGKILLs while snapshots are being saved; the rerun starts from a snapshot and the
    table equals the replay."""
    db = tmp_path / "k.duckdb"
    for commits in (random.randint(12, 20), random.randint(30, 45)):
        proc = start(db)
        kill_after_commits(proc, commits)
        assert proc.returncode == -signal.SIGKILL
    assert snapshot_seqs(db)
    proc = start(db)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    summary = next(json.loads(x) for x in out.splitlines() if '"pipeline.summary"' in x)
    assert summary["from_snapshot"] > 0
    assert summary["skipped"] + summary["applied_total"] == N
    assert duckdb_rows(db) == replay(identity(), N)
