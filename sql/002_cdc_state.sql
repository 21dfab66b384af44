-- The stream each shard writes (its identity: seed, start, generator settings),
-- and per partition the last sequence number applied. A checkpoint row is
-- written in the same transaction as the rows it covers: that is what makes a
-- restart, a retry or a lost reply apply every change exactly once.
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
