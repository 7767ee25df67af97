"""The exceptions digitlab raises on purpose.

Every front end (CLI, web app, desktop app) turns a `DigitlabError` into a
one-line message and a non-zero exit or a 4xx answer; anything else is a bug
and is allowed to show its traceback.
"""

from __future__ import annotations


class DigitlabError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""

    exit_code = 2


class DataError(DigitlabError):
    """A dataset file is missing, truncated, corrupted or inconsistent."""


class ModelError(DigitlabError):
    """A model file is missing, corrupt, or its card does not match."""


class InputError(DigitlabError):
    """An image or drawing that cannot be turned into a digit image."""
