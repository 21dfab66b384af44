"""Snowflake through the real connector.

- :mod:`.connection`: sign-in, sending one statement, a session for ad-hoc SQL;
- :mod:`.errors`: what a connector error means (transient or terminal), in one place;
- :mod:`.sql`: pure builders of a batch's statements;
- :mod:`.writer`: one worker's batches, one transaction each;
- :mod:`.sink`: set-up, the stream's state, writers and sessions.
"""

from __future__ import annotations

from .connection import SnowSession, open_connection
from .sink import SnowflakeSink
from .writer import SnowflakeWriter

__all__ = ["SnowSession", "SnowflakeSink", "SnowflakeWriter", "open_connection"]
