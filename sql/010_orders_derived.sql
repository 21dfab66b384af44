-- The derived layer: one row per order of raw_orders, with the seed's columns and
-- formulas (year, month, value category, completion status, age in days).
--
-- It is two objects, so that the part Snowflake keeps is refreshed incrementally:
-- * orders_derived_rows, a dynamic table of every column that does not change with the
--   time it is read. REFRESH_MODE = INCREMENTAL is explicit: with the default AUTO,
--   Snowflake picks a mode once, at creation, and an item it cannot keep incrementally
--   would make it FULL for good (re-reading all of raw_orders at every refresh), where
--   INCREMENTAL refuses such a definition at creation instead. (Snowflake documentation:
--   "Supported queries for dynamic tables", "Dynamic table refresh modes".)
-- * orders_derived, what users query (the seed's name and columns): a view adding
--   days_since_order, which changes every day for every row. A current-time function in
--   a dynamic table's SELECT list is not supported for incremental refresh ("Supported
--   queries for dynamic tables": CURRENT_TIMESTAMP and its aliases only in WHERE, HAVING
--   or QUALIFY); in a view it costs nothing until read, and is always current.
--
-- Fixed from the seed:
-- * WAREHOUSE is an identifier from configuration (the layers' warehouse:
--   CDC_LAYERS_WAREHOUSE, else SNOWFLAKE_WAREHOUSE), not the string 'COMPUTE_WH';
-- * IF NOT EXISTS, not OR REPLACE: `ecomm-cdc init` and every start of `run` apply this
--   file, and must leave a live dynamic table (and its refresh history) alone. A target
--   made by an earlier version is found at start and `ecomm-cdc init --upgrade` recreates
--   its layers (service/warehouse/dynamic.py);
-- * days_since_order counts UTC day boundaries: order_date holds UTC wall-clock time, and
--   SYSDATE() is "now" in UTC, where the seed's CURRENT_TIMESTAMP() is in the session's
--   time zone (so a day would turn at local midnight).
--
-- Locally (DuckDB, the emulator) there are no dynamic tables: the service takes the
-- SELECT below, translates it with sqlglot and keeps it as a table
-- (service/warehouse/layers.py: by deltas on DuckDB, service/warehouse/deltas.py); the
-- view is created as written, translated.
CREATE DYNAMIC TABLE IF NOT EXISTS orders_derived_rows
    TARGET_LAG = DOWNSTREAM
    WAREHOUSE = {{warehouse}}
    REFRESH_MODE = INCREMENTAL
AS
SELECT
    order_id,
    customer_id,
    order_date,
    status,
    amount,
    product_id,
    quantity,
    EXTRACT(YEAR FROM order_date) AS order_year,
    EXTRACT(MONTH FROM order_date) AS order_month,
    CASE WHEN amount > 100 THEN 'High Value' ELSE 'Low Value' END AS order_value_category,
    CASE WHEN status = 'DELIVERED' THEN 'Completed' ELSE 'Pending' END AS order_completion_status
FROM raw_orders;

CREATE VIEW IF NOT EXISTS orders_derived AS
SELECT
    order_id,
    customer_id,
    order_date,
    status,
    amount,
    product_id,
    quantity,
    order_year,
    order_month,
    order_value_category,
    order_completion_status,
    DATEDIFF('day', order_date, SYSDATE()) AS days_since_order
FROM orders_derived_rows;
