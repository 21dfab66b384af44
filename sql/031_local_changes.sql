-- Local targets only: what lets the local refresh (service/warehouse/deltas.py) follow what changed
-- instead of rebuilding both layers from the whole of raw_orders.
--
-- The order ids each batch touched (inserted, updated or deleted), written by the DuckDB
-- writer in the batch's own transaction, so a refresh sees a row's change and its id
-- together. A refresh applies the ids it sees and deletes them in its own transaction.
-- (The emulator's writer does not write it: there the refresh rebuilds.)
CREATE TABLE IF NOT EXISTS cdc_changed_orders (
    order_id VARCHAR NOT NULL
);

-- What the layers were last built or brought up to date from: the definitions (a digest
-- of the layers' SELECTs) and the streams (shard, created_at). When either differs, or the
-- row has gone (`DELETE FROM cdc_layer_state` forces it), the next refresh rebuilds all.
CREATE TABLE IF NOT EXISTS cdc_layer_state (
    definition VARCHAR NOT NULL,
    streams VARCHAR NOT NULL,
    refreshed_at TIMESTAMP_NTZ NOT NULL
);
