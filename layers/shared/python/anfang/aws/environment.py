"""A function's environment (what ``template.yaml`` sets) as a pydantic model, validated once at cold start.

Resource names come from the stack; nothing is hard-coded to a stack. Names carry their unit where they have
one. A bad or missing variable fails the cold start with :class:`SettingsError`, which names the variables
and never their values.

>>> class Settings(FunctionSettings):
...     table: str = Field(alias="TABLE_NAME", min_length=3)
>>> Settings.from_env({"TABLE_NAME": "anfang-330106-devices"}).table
'anfang-330106-devices'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["FunctionSettings", "SettingsError"]


class SettingsError(Exception):
    """The environment of a function is missing or has a bad value (names the variables, never values)."""


class FunctionSettings(BaseModel):
    """Base of every function's settings: frozen, other variables ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def variables(cls) -> set[str]:
        """The environment variables this model reads (the template must set the required ones)."""
        return {field.alias or name for name, field in cls.model_fields.items()}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        """Validate the environment; ``SettingsError`` names the bad variables (never their values)."""
        try:
            return cls.model_validate(dict(environ))
        except ValidationError as exc:
            bad = sorted({str(err["loc"][0]) if err["loc"] else err["msg"] for err in exc.errors(include_input=False)})
            raise SettingsError("bad or missing environment variables: " + ", ".join(bad)) from None
