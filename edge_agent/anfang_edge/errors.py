"""Typed errors of the edge agent; each carries a stable ``code``."""

from __future__ import annotations

__all__ = ["AgentError", "ConfigError", "KeyFileError", "SpoolError", "SpoolFullError"]


class AgentError(Exception):
    """Base of the agent's errors: one readable line in ``str()``."""

    code = "agent_error"


class ConfigError(AgentError):
    code = "config_invalid"


class KeyFileError(AgentError):
    code = "key_file"


class SpoolError(AgentError):
    code = "spool_error"


class SpoolFullError(SpoolError):
    """The spool is at ``spool_max_megabytes`` and ``when_full = "block"`` timed out."""

    code = "spool_full"
