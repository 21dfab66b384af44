-- The stream each shard writes (its identity: seed, start, generator settings),
-- and per partition the last sequence number applied. A checkpoint row is
-- written in the same transaction as the rows it covers: that is what makes a
-- restart, a retry or a lost reply apply every change exactly once.
--
-- One writer per shard: a process that starts takes the shard over by raising
-- writer_epoch (newest wins) and stamping it on every checkpoint row of the
-- shard; each batch advances its checkpoints only where writer_epoch is still
-- its own, and while cdc_streams still names it. A process that has been
-- taken over can therefore never commit a batch: its checkpoint UPDATE finds
-- no row, and the batch is rolled back. (The cdc_streams test stops the old
-- writer as soon as the new one has raised the epoch, before the stamp: where
-- concurrent writes conflict instead of waiting, a busy old writer would
-- otherwise make every attempt of the stamp fail.)
-- The checkpoint rows are created with the stream, so a batch only UPDATEs them
-- (no MERGE: on the emulator a MERGE commits the open transaction).
CREATE TABLE IF NOT EXISTS cdc_streams (
    shard VARCHAR NOT NULL,
    identity VARCHAR NOT NULL,
    created_at TIMESTAMP_NTZ NOT NULL,
    CONSTRAINT pk_cdc_streams PRIMARY KEY (shard)
);

CREATE TABLE IF NOT EXISTS cdc_checkpoints (
    shard VARCHAR NOT NULL,
    partition_id INTEGER NOT NULL,
    last_seq BIGINT NOT NULL,
    updated_at TIMESTAMP_NTZ NOT NULL,
    CONSTRAINT pk_cdc_checkpoints PRIMARY KEY (shard, partition_id)
);

-- Generator snapshots: the stream's state after seq events (its ring of orders in
-- flight and its random generator's state), so that a restart continues the stream
-- from the newest snapshot every partition has passed instead of regenerating it
-- from seq 1. A cache of a pure function's state: using one or not gives the same
-- events. identity is a digest of the stream's identity (a snapshot of another
-- stream is never used); state is base64, cut into parts so that no statement
-- comes near Snowflake's limit on a statement's size. A few per shard are kept.
CREATE TABLE IF NOT EXISTS cdc_snapshots (
    shard VARCHAR NOT NULL,
    identity VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    part INTEGER NOT NULL,
    state VARCHAR NOT NULL,
    created_at TIMESTAMP_NTZ NOT NULL,
    CONSTRAINT pk_cdc_snapshots PRIMARY KEY (shard, identity, seq, part)
);

-- The sessions each writer of a shard opened (Snowflake and the emulator), so that the
-- next writer can end what they left open. A writer killed in the middle of a batch
-- (SIGKILL, an OOM kill, a node lost) leaves its session's transaction open, "detached",
-- with its locks: Snowflake aborts it only once it has blocked another transaction for
-- 5 idle minutes ("Transactions": aborting transactions). A writer that takes the shard
-- over aborts the open transactions of the sessions recorded here by others
-- (SHOW TRANSACTIONS, SYSTEM$ABORT_TRANSACTION), so its first batch does not wait for
-- them. Nothing they had not committed is lost: it is ahead of the checkpoint. A
-- session is recorded in a transaction of its own before it writes anything.
CREATE TABLE IF NOT EXISTS cdc_sessions (
    shard VARCHAR NOT NULL,
    session_id VARCHAR NOT NULL,
    writer VARCHAR,
    opened_at TIMESTAMP_NTZ NOT NULL,
    role VARCHAR,  -- control (claims), worker (batches), snapshot
    CONSTRAINT pk_cdc_sessions PRIMARY KEY (shard, session_id)
);

-- Added after the first release (a target from before gets them on its next start).
ALTER TABLE cdc_streams ADD COLUMN IF NOT EXISTS writer_epoch BIGINT;
ALTER TABLE cdc_streams ADD COLUMN IF NOT EXISTS writer VARCHAR;
ALTER TABLE cdc_streams ADD COLUMN IF NOT EXISTS writer_since TIMESTAMP_NTZ;
ALTER TABLE cdc_checkpoints ADD COLUMN IF NOT EXISTS writer_epoch BIGINT;
