-- The aggregated layer: one row per (order_year, order_month) of orders_derived,
-- the seed's metrics under the seed's names.
--
-- Two seed names mislead: total_high_value_orders and total_low_value_orders
-- are sums of amounts (revenue from orders above / at most 100), not counts.
-- They are kept for compatibility, and the honest columns sit beside them:
-- high_value_order_count and low_value_order_count count the orders.
--
-- TARGET_LAG = DOWNSTREAM: nothing reads this table on a schedule, so the task
-- refresh_orders_agg (020_refresh_task.sql) refreshes it, and with it
-- orders_derived, every two minutes. IF NOT EXISTS and the warehouse: see
-- 010_orders_derived.sql.
CREATE DYNAMIC TABLE IF NOT EXISTS orders_aggregated
    TARGET_LAG = DOWNSTREAM
    WAREHOUSE = {{warehouse}}
AS
SELECT
    order_year,
    order_month,
    COUNT(DISTINCT order_id) AS total_orders,
    SUM(amount) AS total_revenue,
    AVG(amount) AS average_order_value,
    COUNT(DISTINCT customer_id) AS unique_customers,
    SUM(quantity) AS total_items_sold,
    SUM(CASE WHEN status = 'DELIVERED' THEN amount ELSE 0 END) AS total_delivered_revenue,
    SUM(CASE WHEN order_value_category = 'High Value' THEN amount ELSE 0 END) AS total_high_value_orders,
    SUM(CASE WHEN order_value_category = 'Low Value' THEN amount ELSE 0 END) AS total_low_value_orders,
    COUNT(CASE WHEN order_value_category = 'High Value' THEN 1 END) AS high_value_order_count,
    COUNT(CASE WHEN order_value_category = 'Low Value' THEN 1 END) AS low_value_order_count
FROM orders_derived
GROUP BY order_year, order_month;
