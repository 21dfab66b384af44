-- The derived layer: one row per order of raw_orders, with the seed's columns
-- and formulas (year, month, value category, completion status, age in days).
--
-- Fixed from the seed:
-- * WAREHOUSE is an identifier from configuration (the warehouse placeholder), not the
--   string 'COMPUTE_WH';
-- * IF NOT EXISTS, not OR REPLACE: `ecomm-cdc init` and every start of `run`
--   apply this file, and must leave a live dynamic table (and its refresh
--   history) alone. To change the definition, drop the table and run init;
-- * days_since_order counts UTC day boundaries: order_date holds UTC wall-clock
--   time, and SYSDATE() is "now" in UTC, where the seed's CURRENT_TIMESTAMP()
--   is in the session's time zone (so a day would turn at local midnight).
--
-- Locally (DuckDB, the emulator) there are no dynamic tables: the service
-- takes the SELECT below from this file, translates it with sqlglot, and
-- materialises it as a plain table on every refresh (service/warehouse/layers.py).
CREATE DYNAMIC TABLE IF NOT EXISTS orders_derived
    TARGET_LAG = DOWNSTREAM
    WAREHOUSE = {{warehouse}}
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
    CASE WHEN status = 'DELIVERED' THEN 'Completed' ELSE 'Pending' END AS order_completion_status,
    DATEDIFF('day', order_date, SYSDATE()) AS days_since_order
FROM raw_orders;
