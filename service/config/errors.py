"""The one error every bad setting becomes: exit 2, one line naming the culprit."""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is invalid. ``setting`` is the flag, variable or file key to blame."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message
