"""The one exception type raised by the initialization package."""

from __future__ import annotations


class InitError(Exception):
    """An initialization could not be loaded; the message says what was wrong and what was expected."""
