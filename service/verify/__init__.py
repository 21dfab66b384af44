"""``ecomm-cdc verify``: a target checked against the replayed stream, by :mod:`.check`."""
