"""The local stack: a moto server, the template deployed into it, the functions run in-process, the API
served over HTTP on 127.0.0.1 — the same system as a town's stack, on one machine.

>>> with LocalStack(root=Path("."), state_dir=Path(".anfang/local")) as stack:
...     requests.get(stack.info.api_url + "/v1/health")
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from anfang_ops.towns import TownConfig, load_towns

from . import faults, moto_patches
from .deploy import DeployedStack, LocalFunction, deploy_stack
from .faults import AwsFaults
from .metrics import EmfForwarder
from .pollers import S3Poller, ScheduleRunner, SqsPoller, StageTiming
from .runtime import WorkerPool, apply_environment, load_handler

__all__ = ["LocalStack", "StackInfo"]

logger = logging.getLogger("anfang_ops.local")
#: The function that runs in a process per core (the template's logical id).
ANALYSE_FUNCTION: Final = "AnalyseFunction"
PROCESS_FUNCTION: Final = "ProcessFunction"
LOCAL_CREDENTIALS: Final = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass(frozen=True)
class StackInfo:
    """What ``stack.json`` holds: how to reach the local stack."""

    api_url: str
    aws_endpoint_url: str
    region: str
    town: str
    stack_name: str
    outputs: dict[str, str]

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**asdict(self), **self.outputs}, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)  # readers never see a half-written file

    @classmethod
    def read(cls, path: Path) -> StackInfo:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(**{k: data[k] for k in ("api_url", "aws_endpoint_url", "region", "town", "stack_name", "outputs")})


class LocalStack:
    """Start with :meth:`start` (or ``with``), stop with :meth:`stop`; nothing is left running after."""

    def __init__(
        self,
        root: Path,
        state_dir: Path,
        *,
        town: TownConfig | None = None,
        aws_port: int = 0,
        api_port: int = 0,
        retry_delay_secs: int = 1,
        visibility_timeout_max_secs: int = 30,
        analyse_workers: int | None = None,
        process_workers: int = 0,
        schedule_interval_max_secs: float = 60,
        aws_faults: AwsFaults | None = None,
    ) -> None:
        self.root = root.resolve()
        self.state_dir = state_dir
        self.town = town or load_towns(self.root / "infra" / "towns")[0]
        self.aws_port = aws_port
        self.api_port = api_port
        self.retry_delay_secs = retry_delay_secs
        self.visibility_timeout_max_secs = visibility_timeout_max_secs
        # Lambda scales the CPU-bound analyse function out over containers; locally it gets a process per core
        self.analyse_workers = analyse_workers if analyse_workers is not None else (os.cpu_count() or 1)
        # the process function runs in this process (0) or, for a load test that kills its workers, in that many
        self.process_workers = process_workers
        #: AWS faults injected into the functions' clients (load tests); the stack's own clients never get them
        self.aws_faults = aws_faults
        self.pools: dict[str, WorkerPool] = {}
        self._api_handler: tuple[LocalFunction, Any] | None = None
        # a schedule runs at most this far apart locally (the template's five minutes is long for a demo)
        self.schedule_interval_max_secs = schedule_interval_max_secs
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._moto: Any = None
        self._api: Any = None
        self.deployed: DeployedStack | None = None
        self.pollers: list[SqsPoller | S3Poller | ScheduleRunner] = []
        #: per message handled by a queue-triggered function: where its time went (see ``StageTiming``)
        self.timings: list[StageTiming] = []
        self.info: StackInfo | None = None
        self._saved_environ: dict[str, str] | None = None
        self._emf: EmfForwarder | None = None

    @property
    def stack_json(self) -> Path:
        return self.state_dir / "stack.json"

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> StackInfo:
        """Bring everything up; ``stack.json`` is written last, when the stack is ready."""
        import boto3  # noqa: PLC0415 - the local stack needs the cloud and dev extras
        from moto.server import ThreadedMotoServer  # noqa: PLC0415

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        moto_patches.install()  # transactions that do not slow down as tables fill (see the module)
        self._saved_environ = dict(os.environ)  # the functions' environment is this process's: restored on stop
        region = self.town.town.region
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.aws_port, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        aws_env = {**LOCAL_CREDENTIALS, "AWS_DEFAULT_REGION": region, "AWS_REGION": region}
        aws_env["AWS_ENDPOINT_URL"] = endpoint
        os.environ.update(aws_env)
        session = boto3.session.Session(region_name=region)

        self.deployed = deploy_stack(
            session,
            endpoint,
            self.root / "template.yaml",
            self.town.town.stack_name,
            self.town.parameter_overrides(),
            visibility_timeout_max_secs=self.visibility_timeout_max_secs,
        )
        apply_environment(self.deployed.functions, aws_env)
        if self.aws_faults is not None and self.aws_faults.active:
            # from here on every new botocore session (the functions' cold starts) gets the faults; worker
            # processes read them from the environment
            os.environ[faults.ENV] = self.aws_faults.to_env()
            faults.install(self.aws_faults)
        # Only the API reads its service name from the environment (the others name it in code): give it its own,
        # so its metrics carry the dimensions they carry on Lambda.
        for function in self.deployed.functions.values():
            if function.api_routes and "POWERTOOLS_SERVICE_NAME" in function.environment:
                os.environ["POWERTOOLS_SERVICE_NAME"] = function.environment["POWERTOOLS_SERVICE_NAME"]
        # CloudWatch's part: the metrics the functions print (EMF) go to the local CloudWatch (`anfang status`)
        self._emf = EmfForwarder(sys.stdout, session.client("cloudwatch", endpoint_url=endpoint)).start()
        sys.stdout = self._emf

        sqs = session.client("sqs", endpoint_url=endpoint)
        s3 = session.client("s3", endpoint_url=endpoint)
        api_url = ""
        # functions with worker processes (containers) of their own: analyse when there is more than one core, the
        # process function when a load test asks; the others run in this process
        pooled = {
            ANALYSE_FUNCTION: self.analyse_workers if self.analyse_workers > 1 else 0,
            PROCESS_FUNCTION: self.process_workers,
        }
        for function in self.deployed.functions.values():
            workers = pooled.get(function.name, 0)
            handler: Any
            if workers:
                pool = WorkerPool(self.root, function, workers=workers, region=region)
                self.pools[function.name] = pool
                handler = pool
            else:
                handler = load_handler(self.root, function)
            for queue_trigger in function.queue_triggers:
                self.pollers.extend(
                    SqsPoller(
                        sqs,
                        function,
                        handler,
                        queue_trigger,
                        region,
                        self._stop,
                        retry_delay_secs=self.retry_delay_secs,
                        timings=self.timings,
                    )
                    for _ in range(max(1, workers))  # a poller per container
                )
            for s3_trigger in function.s3_triggers:
                self.pollers.append(S3Poller(s3, sqs, function, handler, s3_trigger, region, self._stop))
            for schedule in function.schedule_triggers:
                period = schedule.period_secs or self.schedule_interval_max_secs  # cron(): run it at the local pace
                interval = min(period, self.schedule_interval_max_secs)
                self.pollers.append(
                    ScheduleRunner(function, handler, schedule, region, self._stop, interval_secs=interval)
                )
            if function.api_routes:
                self._api_handler = (function, handler)
                api_url = self._serve_api(handler, function.timeout_secs)
        for poller in self.pollers:
            poller.start()

        self.info = StackInfo(
            api_url=api_url,
            aws_endpoint_url=endpoint,
            region=region,
            town=self.town.town.code,
            stack_name=self.town.town.stack_name,
            outputs=self.deployed.outputs,
        )
        self.info.write(self.stack_json)
        logger.info("local stack %s ready: api %s, aws %s", self.info.stack_name, api_url, endpoint)
        return self.info

    def restart_api(self, down_secs: float = 2.0) -> None:
        """Stop the API as a crash would, keep it down ``down_secs``, bring a new one up on the same port.

        The listening socket closes at once (new connections are refused) and requests in flight are cut off
        (their connections are shut down under them); the new API loads the handler afresh, a cold start with
        empty caches, as a new Lambda container would.
        """
        assert self._api is not None and self._api_handler is not None
        function, _ = self._api_handler
        server = self._api.server
        port = server.server_address[1]
        server.shutdown()
        server.server_close()
        for connection in list(getattr(server, "anfang_connections", ())):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._api = None
        self._stop.wait(down_secs)
        handler = load_handler(self.root, function)
        self._api_handler = (function, handler)
        self._serve_api(handler, function.timeout_secs, port=port)

    def _serve_api(self, app: Any, timeout_secs: int, *, port: int | None = None) -> str:
        from chalice.config import Config  # noqa: PLC0415 - the local server is part of the Chalice CLI
        from chalice.local import create_local_server  # noqa: PLC0415

        config = Config.create(chalice_stage="local", app_name="anfang", lambda_timeout=timeout_secs)
        self._api = create_local_server(app, config, "127.0.0.1", self.api_port if port is None else port)
        server = self._api.server
        # the open connections, so that restart_api can cut them as a crash would
        server.anfang_connections = connections = set()
        serve = server.process_request_thread

        def process_request_thread(request: Any, client_address: Any) -> None:
            connections.add(request)
            try:
                serve(request, client_address)
            finally:
                connections.discard(request)

        server.process_request_thread = process_request_thread
        thread = threading.Thread(target=self._api.server.serve_forever, name="api", daemon=True)
        thread.start()
        self._threads.append(thread)
        host, port = self._api.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop pollers, the API and the moto server; remove ``stack.json``."""
        self.stack_json.unlink(missing_ok=True)
        self._stop.set()
        for poller in self.pollers:
            poller.join(timeout=10)
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
        if self._api is not None:
            self._api.server.shutdown()
            self._api.server.server_close()
            self._api = None
        for thread in self._threads:
            thread.join(timeout=10)
        if self._emf is not None:
            if sys.stdout is self._emf:
                sys.stdout = self._emf.inner
            self._emf.stop()
            self._emf = None
        if self._moto is not None:
            # moto's backends are process-wide: forget this stack so the next one (or a test) starts empty
            host, port = self._moto.get_host_and_port()
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST"))
            except OSError:
                logger.warning("could not reset the moto server's state")
            self._moto.stop()
            self._moto = None
        faults.uninstall()
        if self._saved_environ is not None:
            os.environ.clear()
            os.environ.update(self._saved_environ)
            self._saved_environ = None

    def run_schedule(self, function_name: str) -> Any:
        """Run a scheduled function now, as its schedule would (its answer; None if it raised)."""
        for poller in self.pollers:
            if isinstance(poller, ScheduleRunner) and poller.function.name == function_name:
                return poller.invoke()
        raise KeyError(f"{function_name} has no schedule in this stack")
