"""ecomm-cdc: stream e-commerce order changes into Snowflake, exactly once."""
