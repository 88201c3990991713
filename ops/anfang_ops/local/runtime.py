"""Running the template's functions in-process: handler loading, the Lambda context, the environment."""

from __future__ import annotations

import importlib.util
import io
import multiprocessing
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Final

from . import faults
from .deploy import LocalFunction

__all__ = ["LambdaContext", "WorkerError", "WorkerLost", "WorkerPool", "apply_environment", "load_handler"]

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


# ---------------------------------------------------------------------------------------------------- worker pool

_worker: dict[str, Any] = {}  # the state of one worker process: its handler, function, region and output


class _Captured(io.StringIO):
    """The worker's stdout: what an invocation prints (JSON logs, EMF metrics) goes back to the parent with its
    answer, so it lands where the parent's own functions print (its log, its metric forwarder)."""


def _worker_start(root: str, function: LocalFunction, environ: dict[str, str], region: str) -> None:
    os.environ.update(environ)
    faults.install_from_env(environ)  # a load test's injected AWS faults reach the worker's clients too
    # before the handler loads: Powertools binds its log handler to the sys.stdout it finds at import
    sys.stdout = _Captured()
    # and what Python logs to stderr goes the same way: on Lambda both streams end in the function's log
    sys.stderr = sys.stdout
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    _worker.update(handler=load_handler(Path(root), function), function=function, region=region)


def _exit_with_parent(parent: int) -> None:
    """A container does not outlive its host: when the local stack's process is gone (killed without a chance to
    shut its pools down), the worker is re-parented and exits instead of idling on as an orphan."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def _worker_invoke(event: dict[str, Any]) -> tuple[Any, str]:
    out: _Captured = sys.stdout  # type: ignore[assignment]
    out.seek(0)
    out.truncate()
    try:
        return _worker["handler"](event, LambdaContext(_worker["function"], _worker["region"])), out.getvalue()
    except Exception as exc:
        raise WorkerError(f"{type(exc).__name__}: {exc}", out.getvalue()) from None


class WorkerError(Exception):
    """The handler raised in a worker; carries what it printed."""

    def __init__(self, message: str, printed: str) -> None:
        super().__init__(message, printed)
        self.printed = printed


class WorkerLost(Exception):
    """The worker process died during the invocation (killed, out of memory): nothing came back, so nothing about
    the batch is known. As on Lambda, its messages are left alone and come back after their visibility timeout."""


class _Container:
    """One worker process, as one Lambda container: its own handler, loaded once (the cold start)."""

    def __init__(self, root: Path, function: LocalFunction, region: str) -> None:
        self.executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_start,
            initargs=(str(root), function, dict(os.environ), region),
        )
        self.pid: int = self.executor.submit(os.getpid).result()  # waits for the cold start
        self.busy = False


class WorkerPool:
    """One function run in ``workers`` processes, as that many Lambda containers would run it.

    Threads would share the handler module's state (Powertools keeps one metric set per process, flushed by each
    invocation), so a CPU-bound function (analyse: OpenCV and LiteRT) gets processes of its own, started with
    ``spawn``, each loading the handler once; the event and the answer cross as pickled dicts. Callable like a
    handler (the context is made in the worker). Each invocation takes an idle container; a container whose
    process dies mid-invocation is replaced by a new one (a cold start) and the invocation raises
    :class:`WorkerLost`, which a load test provokes with :meth:`busy_pids` and ``kill -9``.
    """

    def __init__(self, root: Path, function: LocalFunction, *, workers: int, region: str) -> None:
        self.workers = workers
        self.function = function
        self._start = (root, function, region)
        self._idle: queue.Queue[_Container] = queue.Queue()
        self._all: list[_Container] = []
        self._lock = threading.Lock()
        self.replaced = 0
        for _ in range(workers):
            self._add(_Container(*self._start))

    def _add(self, container: _Container) -> None:
        with self._lock:
            self._all.append(container)
        self._idle.put(container)

    def busy_pids(self) -> list[int]:
        """The processes handling an invocation right now."""
        with self._lock:
            return [c.pid for c in self._all if c.busy]

    def pids(self) -> list[int]:
        with self._lock:
            return [c.pid for c in self._all]

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        container = self._idle.get()
        container.busy = True
        try:
            response, printed = container.executor.submit(_worker_invoke, event).result()
        except WorkerError as exc:
            sys.stdout.write(exc.printed)
            raise
        except BrokenProcessPool:
            with self._lock:
                self._all.remove(container)
            container.executor.shutdown(wait=False, cancel_futures=True)
            self.replaced += 1
            container = _Container(*self._start)
            with self._lock:
                self._all.append(container)
            raise WorkerLost(f"{self.function.name}: worker process died mid-invocation") from None
        finally:
            container.busy = False
            self._idle.put(container)
        sys.stdout.write(printed)
        return response

    def close(self) -> None:
        with self._lock:
            containers, self._all = self._all, []
        for container in containers:
            container.executor.shutdown(wait=True, cancel_futures=True)
