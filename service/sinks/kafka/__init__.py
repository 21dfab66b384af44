"""``--target kafka``: the stream as Debezium change events on a topic (see ``sink.py``)."""

from __future__ import annotations

from .sink import KafkaSink, KafkaWriter

__all__ = ["KafkaSink", "KafkaWriter"]
