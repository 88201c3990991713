"""Record every AWS API call the template's functions make while the tests run (botocore event hooks).

Every botocore client created in the test process gets three hooks. Which function a call belongs to is told
by the code that made it, not by a hand-kept list:

- at call time, the innermost frame of the project's own code decides: a frame in ``functions/<name>/``
  (the function's handler or app, and everything it calls in the layer) attributes the call to the template
  function whose ``CodeUri`` is that folder; a frame in ``tests/`` means test code drove the client itself
  (setting up a registry through the app's client, say), which no role ever does, so the call is not the
  function's;
- a call with neither on its stack runs on a worker thread the function started (the API's image uploads,
  the importer's parallel writes): it belongs to the function whose code created the client, which the
  client was tagged with when it was made.

The calls that deploy the template into moto (CloudFormation ``CreateStack`` and ``DescribeStackResources``,
Secrets Manager ``CreateSecret``, KMS ``CreateKey`` of the signing keys made beside the stack) are observed
too: they say which physical resource is which logical one of the template, so the checker can resolve each
role's statements to the ARNs the calls name.

>>> recorder = Recorder(ROOT); recorder.install()
>>> ...  # the tests run
>>> recorder.calls[0].function, recorder.calls[0].requests
('ApiFunction', [('dynamodb:Query', 'arn:aws:dynamodb:us-east-1:123456789012:table/t/index/by_device')])
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

import botocore.session

from anfang_ops.template import functions_of, load_template

from .actions import requests_of

__all__ = ["ACCOUNT_ID", "Call", "Deployment", "Recorder"]

ACCOUNT_ID: Final = "123456789012"  # moto's default account; every test stack is deployed into it
_FUNCTION: Final = "function"
_TEST: Final = "test"
_OTHER: Final = "other"


@dataclass
class Call:
    """One AWS API call a function made (or, for a presigned URL, authorised with its credentials)."""

    function: str
    service: str  # IAM service prefix (botocore's signing name)
    operation: str
    region: str
    requests: list[tuple[str, str]]  # (IAM action, resource ARN) pairs the call needs
    presigned: bool = False
    test: str = ""


@dataclass
class Deployment:
    """A deployment of template.yaml into moto: the stack's parameters and its physical resource ids."""

    stack_name: str
    region: str
    parameters: dict[str, str]
    physical_ids: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # secret name -> ARN, created beside the stack
    keys: dict[str, str] = field(default_factory=dict)  # KMS key description -> ARN, created beside the stack


class Recorder:
    """Hooks every botocore client made in this process; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        template = load_template(self.root / "template.yaml")
        self._function_dirs = {
            str((self.root / spec.code_uri).resolve()) + os.sep: name for name, spec in functions_of(template).items()
        }
        self._tests_dir = str(self.root / "tests") + os.sep
        self._own_dir = str(Path(__file__).resolve().parent) + os.sep
        self._kinds: dict[str, tuple[str, str]] = {}
        self.calls: list[Call] = []
        self.deployments: list[Deployment] = []
        self.errors: list[str] = []
        self._pending: dict[tuple[str, str], Deployment] = {}  # (region, stack name) -> awaiting its resources
        self._secrets: dict[str, dict[str, str]] = {}  # region -> secret name -> ARN
        self._keys: dict[str, dict[str, str]] = {}  # region -> key description -> ARN
        self.current_test = ""
        self._lock = threading.Lock()
        self._original: Callable[..., Any] | None = None

    # ------------------------------------------------------------------------------------------ install

    def install(self) -> None:
        """Wrap ``botocore.session.Session.create_client`` so every new client carries the hooks."""
        if self._original is not None:
            return
        original = botocore.session.Session.create_client
        self._original = original
        recorder = self

        @functools.wraps(original)
        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            recorder._hook(client)
            return client

        botocore.session.Session.create_client = create_client

    def uninstall(self) -> None:
        if self._original is not None:
            botocore.session.Session.create_client = self._original
            self._original = None

    def _hook(self, client: Any) -> None:
        kind, creator = self._attribution(sys._getframe(2))
        tag = creator if kind == _FUNCTION else ""
        region = client.meta.region_name or "us-east-1"
        events = client.meta.events
        events.register("before-parameter-build", functools.partial(self._before, tag=tag, region=region))
        events.register("after-call", functools.partial(self._after, region=region))

    # ------------------------------------------------------------------------------------------ attribution

    def _kind(self, filename: str) -> tuple[str, str]:
        known = self._kinds.get(filename)
        if known is None:
            path = os.path.realpath(filename)
            known = (_OTHER, "")
            for folder, name in self._function_dirs.items():
                if path.startswith(folder):
                    known = (_FUNCTION, name)
                    break
            else:
                if path.startswith(self._tests_dir) and not path.startswith(self._own_dir):
                    known = (_TEST, "")
            self._kinds[filename] = known
        return known

    def _attribution(self, frame: FrameType | None) -> tuple[str, str]:
        """(kind, function) of the innermost project frame: a function's code, test code, or neither."""
        while frame is not None:
            kind = self._kind(frame.f_code.co_filename)
            if kind[0] != _OTHER:
                return kind
            frame = frame.f_back
        return (_OTHER, "")

    # ------------------------------------------------------------------------------------------ hooks

    def _before(self, **kwargs: Any) -> None:
        try:
            self._record(**kwargs)
        except Exception as exc:  # the recorder must never change what a test sees; the check reports it
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _after(self, **kwargs: Any) -> None:
        try:
            self._observe(**kwargs)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _record(self, *, params: Any, model: Any, context: Any, tag: str, region: str, **_: Any) -> None:
        service = model.service_model.signing_name
        operation = model.name
        if service == "cloudformation" and operation == "CreateStack":
            self._stack_created(region, params)
            return
        kind, function = self._attribution(sys._getframe(2))
        if kind == _TEST or (kind == _OTHER and not tag):
            return
        call = Call(
            function=function if kind == _FUNCTION else tag,
            service=service,
            operation=operation,
            region=region,
            requests=requests_of(service, operation, params or {}, region=region, account=ACCOUNT_ID),
            presigned=bool(context.get("is_presign_request")) if isinstance(context, dict) else False,
            test=self.current_test,
        )
        if isinstance(context, dict):
            context["anfang_iam_call"] = call
        with self._lock:
            self.calls.append(call)

    def _observe(self, *, parsed: Any, model: Any, context: Any, region: str, **_: Any) -> None:
        service = model.service_model.signing_name
        operation = model.name
        if not isinstance(parsed, dict):
            return
        if service == "cloudformation" and operation == "DescribeStackResources":
            self._stack_resources(region, parsed)
        elif service == "secretsmanager" and operation == "CreateSecret" and "ARN" in parsed:
            self._secrets.setdefault(region, {})[str(parsed["Name"])] = str(parsed["ARN"])
        elif service == "kms" and operation == "CreateKey" and "KeyMetadata" in parsed:
            metadata = parsed["KeyMetadata"]
            self._keys.setdefault(region, {})[str(metadata.get("Description", ""))] = str(metadata["Arn"])
        call = context.get("anfang_iam_call") if isinstance(context, dict) else None
        if call is not None and service == "kms" and operation == "Decrypt" and parsed.get("KeyId"):
            # Decrypt names its key in the ciphertext, not always in the request: the answer says which
            call.requests = [(action, str(parsed["KeyId"])) for action, _ in call.requests]

    # ------------------------------------------------------------------------------------------ deployments

    def _stack_created(self, region: str, params: dict[str, Any]) -> None:
        parameters = {p["ParameterKey"]: p["ParameterValue"] for p in params.get("Parameters", [])}
        name = str(params["StackName"])
        self._pending[(region, name)] = Deployment(name, region, parameters)

    def _stack_resources(self, region: str, parsed: dict[str, Any]) -> None:
        resources = parsed.get("StackResources", [])
        if not resources:
            return
        name = str(resources[0]["StackName"])
        deployment = self._pending.pop((region, name), None)
        if deployment is None:
            return
        deployment.physical_ids = {
            r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in resources
            if r.get("LogicalResourceId") and r.get("PhysicalResourceId")
        }
        deployment.secrets = dict(self._secrets.get(region, {}))
        deployment.keys = dict(self._keys.get(region, {}))
        with self._lock:
            self.deployments.append(deployment)
