"""The benchmarks: ``bench`` (:mod:`.pipeline`), ``bench --long``, ``bench --snowflake``."""
