"""The exceptions digitlab raises on purpose.

Every front end (CLI, web app, desktop app) turns a `DigitlabError` into a
one-line message and a non-zero exit or a 4xx answer; anything else is a bug
and is allowed to show its traceback.

A message about an argument of a library call names the call's parameter (``out must be
an .onnx path``), not a command-line flag: the library does not know how it was called.
Such an error is made with `DigitlabError.naming`, and a front end names the parameters
as its user knows them with `DigitlabError.named` (the CLI: ``--out must be ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self


class DigitlabError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""

    exit_code = 2
    template: str | None = None  # set by `naming`
    parameters: tuple[str, ...] = ()
    values: Mapping[str, Any] = {}

    @classmethod
    def naming(cls, template: str, *parameters: str, **values: Any) -> Self:
        """An error about the call's ``parameters``: ``template`` holds ``{name}`` for each
        of them (filled with the parameter's name, or with what `named` is given) and for
        each of ``values`` (filled with the value: a path, a number)."""
        error = cls(template.format(**{p: p for p in parameters}, **values))
        error.template, error.parameters, error.values = template, parameters, values
        return error

    def named(self, names: Mapping[str, str]) -> str:
        """The message, each parameter called as ``names`` says (its own name when absent)."""
        if self.template is None:
            return str(self)
        return self.template.format(**{p: names.get(p, p) for p in self.parameters}, **self.values)


class DataError(DigitlabError):
    """A dataset file is missing, truncated, corrupted or inconsistent."""


class ModelError(DigitlabError):
    """A model file is missing, corrupt, or its card does not match."""


class InputError(DigitlabError):
    """An image or drawing that cannot be turned into a digit image."""
