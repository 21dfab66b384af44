-- The seed's task: refresh orders_aggregated (and, upstream, orders_derived_rows) every
-- two minutes. Snowflake only: locally the service's own scheduler plays this task (every
-- CDC_REFRESH_INTERVAL seconds, 120 by default) and records its runs in cdc_task_history
-- (030_local_task_history.sql). The statement after AS is also what `ecomm-cdc refresh`
-- runs on Snowflake.
--
-- What the service does with this file (service/warehouse/layers.py), and why:
-- * it creates the task only where SHOW TASKS finds none, and resumes it (a task is created
--   suspended) only then: resuming a task that exists would resume one an operator
--   suspended on purpose, and resets its schedule ("ALTER TASK": RESUME);
-- * resuming needs the EXECUTE TASK privilege (account level) for the task owner's role
--   ("ALTER TASK", "Task security"): without it the service says so in one warning line and
--   streams on; the layers are then refreshed by `ecomm-cdc refresh` or by a role that has
--   the privilege running `ALTER TASK refresh_orders_agg RESUME`;
-- * with CDC_LAYERS_REFRESH=target-lag neither statement runs (orders_aggregated has a
--   target lag of its own: 011_orders_aggregated.sql).
-- Fixed from the seed: the warehouse from configuration, IF NOT EXISTS.
CREATE TASK IF NOT EXISTS refresh_orders_agg
    WAREHOUSE = {{warehouse}}
    SCHEDULE = '2 MINUTE'
AS
    ALTER DYNAMIC TABLE orders_aggregated REFRESH;

ALTER TASK refresh_orders_agg RESUME;
