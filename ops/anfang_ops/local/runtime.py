"""Running the template's functions in-process: handler loading, the Lambda context, the environment."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from .deploy import LocalFunction

__all__ = ["LambdaContext", "apply_environment", "load_handler"]

# Variables that legitimately differ between functions; each handler names its service in code as well.
PER_FUNCTION: Final = frozenset({"POWERTOOLS_SERVICE_NAME"})


class LambdaContext:
    """The parts of the Lambda context object that handlers and Powertools read."""

    def __init__(self, function: LocalFunction, region: str, account_id: str = "123456789012") -> None:
        self.function_name = function.name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = function.memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function.name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function.name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + function.timeout_secs

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(root: Path, function: LocalFunction) -> Callable[..., Any]:
    """Import ``<CodeUri>/<module>.py`` under a private module name and return its handler attribute.

    Each function folder holds one thin module (handlers are wiring only: docs/architecture.md), so loading by file
    path keeps several ``handler.py`` modules apart in one process.
    """
    module_name, _, attribute = function.handler.rpartition(".")
    path = root / function.code_uri / f"{module_name.replace('.', '/')}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{function.name}: handler module {path} does not exist")
    unique = f"anfang_local_{function.name}_{module_name.replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(unique, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{function.name}: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    handler = getattr(module, attribute)
    if not callable(handler):
        raise TypeError(f"{function.name}: {function.handler} is not callable")
    return handler  # type: ignore[no-any-return]


def apply_environment(functions: Mapping[str, LocalFunction], aws: Mapping[str, str]) -> dict[str, str]:
    """Put the functions' environment (and the local AWS settings) into ``os.environ``; return what was set.

    The functions share one process, so their variables must agree; only ``PER_FUNCTION`` ones may differ.
    """
    merged: dict[str, str] = dict(aws)
    for function in functions.values():
        for key, value in function.environment.items():
            if key in PER_FUNCTION:
                continue
            if key in merged and merged[key] != value:
                raise ValueError(f"{key} differs between functions; in-process functions must agree on it")
            merged[key] = value
    os.environ.update(merged)
    return merged
