"""AWS faults for load tests: throttling and 5xx answers injected on the real botocore client path.

A ``before-send`` hook (botocore's event system) answers a chosen share of the functions' AWS requests with
the error the service gives when it throttles or fails — ``ThrottlingException`` / ``Throttling`` / ``SlowDown``,
``InternalFailure`` / ``InternalError`` — in the service's own protocol (JSON, query
XML, REST XML), instead of sending it to moto. Everything after that is the real thing: botocore parses the
answer, its retry handler retries with backoff, and only when the retries run out does our code see a
``ClientError``. Nothing of our own code is patched.

The layer makes its own ``boto3.session.Session()`` per function (as on Lambda), so the hook is added to
``botocore.handlers.BUILTIN_HANDLERS``, the list every new botocore session registers: sessions made after
:func:`install` (the functions' cold starts, in this process and in worker processes, which install from the
environment) carry it; a session of the load test itself is exempted with :func:`exempt`. moto has no fault
injection of its own for these services, which is why this hook exists.

Which requests fail: each with probability ``rate`` for the listed services, and ``storm_rate`` while the file
``storm_flag`` exists (a file, so that every process sees the load test start and end a storm). Each injected
fault is appended as one line (``<unix time> <service> <operation> <code>``) to ``log``, which the test counts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = ["ENV", "AwsFaults", "exempt", "injected", "install", "install_from_env", "uninstall"]

#: The variable that carries the fault settings (JSON) to worker processes.
ENV: Final = "ANFANG_LOCAL_AWS_FAULTS"
SERVICES: Final = ("sqs", "sns", "dynamodb", "s3", "kms")
# (code, HTTP status) per protocol: a throttle and a server error, as each service sends them
_THROTTLE: Final = {"json": ("ThrottlingException", 400), "query": ("Throttling", 400), "rest-xml": ("SlowDown", 503)}
_FAILURE: Final = {
    "json": ("InternalFailure", 500),
    "query": ("InternalError", 500),
    "rest-xml": ("InternalError", 500),
}


@dataclass(frozen=True)
class AwsFaults:
    """What to inject: ``rate`` of requests to ``services`` fail, ``storm_rate`` while ``storm_flag`` exists."""

    rate: float = 0.0
    services: tuple[str, ...] = SERVICES
    #: a file whose existence means "storm now": every process sees the load test switch it on and off
    storm_flag: str | None = None
    storm_rate: float = 0.3
    log: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1 or not 0 <= self.storm_rate <= 1:
            raise ValueError("fault rates are shares of requests, between 0 and 1")
        if unknown := set(self.services) - set(SERVICES):
            raise ValueError(f"no fault injection for {', '.join(sorted(unknown))}; choose from {', '.join(SERVICES)}")

    @property
    def active(self) -> bool:
        return self.rate > 0 or self.storm_flag is not None

    def rate_now(self) -> float:
        return self.storm_rate if self.storm_flag is not None and Path(self.storm_flag).exists() else self.rate

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AwsFaults | None:
        raw = environ.get(ENV)
        if not raw:
            return None
        data = json.loads(raw)
        data["services"] = tuple(data.get("services", SERVICES))
        return cls(**data)


@dataclass
class _Injector:
    faults: AwsFaults
    rng: random.Random
    protocols: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def protocol(self, service: str) -> str:
        if service not in self.protocols:
            import botocore.session  # noqa: PLC0415 - only a process with AWS clients installs the hook

            self.protocols[service] = botocore.session.get_session().get_service_model(service).protocol
        return self.protocols[service]

    def __call__(self, request: Any, event_name: str = "", **kwargs: Any) -> Any:
        # event_name is before-send.<service-id>.<Operation>
        service_id, _, operation = event_name.partition(".")[2].partition(".")
        service = service_id.lower()
        if service not in self.faults.services:
            return None
        now = time.time()
        with self.lock:
            if self.rng.random() >= self.faults.rate_now():
                return None
            throttle = self.rng.random() < 0.5
        protocol = self.protocol(service)
        kind = _THROTTLE if throttle else _FAILURE
        code, status = kind.get(protocol, kind["json"])
        if self.faults.log:
            with Path(self.faults.log).open("a", encoding="utf-8") as log:  # one short line: O_APPEND keeps it whole
                log.write(f"{now:.3f} {service} {operation} {code}\n")
        return _response(request.url, protocol, code, status)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


def _response(url: str, protocol: str, code: str, status: int) -> Any:
    from botocore.awsrequest import AWSResponse  # noqa: PLC0415

    request_id = str(uuid.uuid4())
    message = "injected by the anfang load test"
    headers = {"x-amzn-RequestId": request_id}
    if protocol.startswith("json") or protocol == "rest-json":
        headers |= {"x-amzn-ErrorType": code, "Content-Type": "application/x-amz-json-1.0"}
        body = json.dumps({"__type": code, "message": message}).encode()
    elif protocol == "query":
        headers["Content-Type"] = "text/xml"
        body = (
            f"<ErrorResponse><Error><Type>{'Sender' if status < 500 else 'Receiver'}</Type><Code>{code}</Code>"
            f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
    else:  # rest-xml (S3)
        headers["Content-Type"] = "application/xml"
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
    return AWSResponse(url, status, headers, _Raw(body))


_installed: list[_Injector] = []


def install(faults: AwsFaults) -> None:
    """Inject ``faults`` into every botocore session made from now on in this process (until :func:`uninstall`)."""
    import botocore.handlers  # noqa: PLC0415

    uninstall()
    if not faults.active:
        return
    injector = _Injector(faults, random.Random(faults.seed ^ os.getpid()))
    botocore.handlers.BUILTIN_HANDLERS.append(("before-send", injector))
    _installed.append(injector)


def install_from_env(environ: Mapping[str, str] = os.environ) -> None:
    """What a worker process calls before its handler loads: the parent's faults, if it set any."""
    faults = AwsFaults.from_env(environ)
    if faults is not None:
        install(faults)


def uninstall() -> None:
    import botocore.handlers  # noqa: PLC0415

    for injector in _installed:
        botocore.handlers.BUILTIN_HANDLERS[:] = [h for h in botocore.handlers.BUILTIN_HANDLERS if h[1] is not injector]
    _installed.clear()


def exempt(session: Any) -> Any:
    """Take the injected faults off a boto3 session (the load test's own clients); returns the session."""
    for injector in _installed:
        session.events.unregister("before-send", injector)
    return session


def injected(log: Path) -> list[tuple[float, str, str, str]]:
    """The faults logged so far: (time, service, operation, code)."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 4:
            out.append((float(parts[0]), parts[1], parts[2], parts[3]))
    return out
