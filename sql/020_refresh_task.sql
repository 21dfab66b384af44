-- The seed's task: refresh orders_aggregated (and, upstream, orders_derived)
-- every two minutes, then resume it (a task is created suspended).
--
-- Fixed from the seed: the warehouse from configuration; IF NOT EXISTS, so that
-- re-applying this file keeps the task and its history (ALTER TASK ... RESUME
-- is harmless on a running task). Snowflake only: locally the service's own
-- scheduler plays this task (every CDC_REFRESH_INTERVAL seconds, 120 by
-- default) and records its runs in cdc_task_history (030_local_task_history.sql).
-- The statement after AS is also what `ecomm-cdc refresh` runs on Snowflake.
CREATE TASK IF NOT EXISTS refresh_orders_agg
    WAREHOUSE = {{warehouse}}
    SCHEDULE = '2 MINUTE'
AS
    ALTER DYNAMIC TABLE orders_aggregated REFRESH;

ALTER TASK refresh_orders_agg RESUME;
