-- Local targets only (DuckDB, the emulator): there are no tasks there, so the
-- service's scheduler plays refresh_orders_agg and records every run here.
-- The columns are those of Snowflake's INFORMATION_SCHEMA.TASK_HISTORY that
-- matter (times in UTC), plus the rows the refresh wrote to the two layers:
-- `ecomm-cdc tasks` reads this table locally and TASK_HISTORY on Snowflake.
CREATE TABLE IF NOT EXISTS cdc_task_history (
    name VARCHAR NOT NULL,
    scheduled_time TIMESTAMP_NTZ NOT NULL,
    query_start_time TIMESTAMP_NTZ,
    completed_time TIMESTAMP_NTZ,
    state VARCHAR NOT NULL,
    error_message VARCHAR,
    rows_written BIGINT
);
