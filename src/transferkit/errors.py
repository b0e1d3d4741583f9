"""User-facing errors.

A :class:`TransferkitError` is a mistake the user can fix (bad config key, corrupt data, wrong weights file). Its
message is one plain sentence that says what is wrong and what to do. The CLI prints that sentence and exits with a
non-zero status, without a traceback; anything that is *not* a ``TransferkitError`` is a bug and keeps its traceback.
"""

from __future__ import annotations


class TransferkitError(Exception):
    """A user error whose message is one plain sentence: what is wrong and what to do."""

    def __init__(self, message: str = "", *args: object) -> None:
        if message.endswith("?."):  # a sentence ending in a suggestion ("did you mean 'x'?") needs no full stop
            message = message[:-1]
        super().__init__(message, *args)


class ConfigError(TransferkitError):
    """The run configuration is invalid (unknown key, wrong type, impossible value)."""


class DataError(TransferkitError):
    """The data cannot be used (missing folder or column, corrupt files, too few classes)."""


class BackboneError(TransferkitError):
    """The backbone cannot be built (unknown name, hub model while offline)."""


class WeightsError(TransferkitError):
    """A weights file is unsafe, unreadable, or does not fit the model."""


class RunError(TransferkitError):
    """A run folder is missing, incomplete, or would be overwritten."""
