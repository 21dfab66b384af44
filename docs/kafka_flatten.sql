-- Flatten the change events the Snowflake Kafka Connector (v4, Snowpipe Streaming) landed
-- into raw_orders-shaped rows: the last change of each order wins, deletes drop the order.
-- An example for docs/kafka.md: ecomm-cdc never runs this file.
--
-- The connector lands each record as a row of ECOMM_RAW_ORDERS_EVENTS with
-- RECORD_CONTENT (the value, a VARIANT) and RECORD_METADATA (key, partition, offset, ...).
-- Tombstones (null values) are skipped by the connector's behavior.on.null.values=IGNORE.
CREATE OR REPLACE DYNAMIC TABLE raw_orders_from_kafka
    TARGET_LAG = '1 minute'
    WAREHOUSE = COMPUTE_WH
AS
SELECT
    image:order_id::VARCHAR                                  AS order_id,
    image:customer_id::VARCHAR                               AS customer_id,
    TO_TIMESTAMP_NTZ(image:order_date::NUMBER, 3)            AS order_date,
    image:status::VARCHAR                                    AS status,
    image:amount::NUMBER(12, 2)                              AS amount,
    image:product_id::VARCHAR                                AS product_id,
    image:quantity::INTEGER                                  AS quantity
FROM (
    SELECT
        RECORD_CONTENT:op::VARCHAR AS op,
        COALESCE(RECORD_CONTENT:after, RECORD_CONTENT:before) AS image,
        RECORD_CONTENT:source:seq::NUMBER AS seq
    FROM ECOMM_RAW_ORDERS_EVENTS
    WHERE RECORD_CONTENT:op IS NOT NULL
    -- The stream's seq orders an order's changes (they are in one topic partition, in order).
    QUALIFY ROW_NUMBER() OVER (PARTITION BY image:order_id ORDER BY seq DESC) = 1
)
WHERE op <> 'd';
