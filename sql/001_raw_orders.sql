-- The landing table: one row per live order, the seed's column names.
-- amount is NUMBER(12, 2): the seed's bare NUMBER has scale 0 and drops the cents.
-- The primary key is informational in Snowflake (not enforced); verify checks it.
CREATE TABLE IF NOT EXISTS raw_orders (
    order_id VARCHAR NOT NULL,
    customer_id VARCHAR,
    order_date TIMESTAMP_NTZ,
    status VARCHAR,
    amount NUMBER(12, 2),
    product_id VARCHAR,
    quantity INTEGER,
    CONSTRAINT pk_raw_orders PRIMARY KEY (order_id)
);
