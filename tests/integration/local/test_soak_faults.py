"""The soak's fault machinery against real parts: botocore clients talking to a moto server over HTTP, an SQS
event source mapping losing its worker, an uplink relaying real HTTP."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from anfang_ops.local import faults
from anfang_ops.local.deploy import LocalFunction, QueueTrigger
from anfang_ops.local.faults import AwsFaults
from anfang_ops.local.pollers import SqsPoller
from anfang_ops.local.runtime import WorkerLost
from anfang_ops.local.uplink import Uplink

REGION = "cn-north-1"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def injected(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "faults.log"
    faults.uninstall()


def _client(endpoint: str, service: str, *, attempts: int = 1) -> Any:
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "total_max_attempts": attempts})
    return boto3.session.Session(region_name=REGION).client(service, endpoint_url=endpoint, config=config)


CALLS = {
    "sqs": lambda c: c.list_queues(),
    "sns": lambda c: c.list_topics(),
    "dynamodb": lambda c: c.list_tables(),
    "s3": lambda c: c.list_buckets(),
    "kms": lambda c: c.list_keys(),
}
EXPECTED = {
    "sqs": {"ThrottlingException", "InternalFailure"},
    "sns": {"Throttling", "InternalError"},
    "dynamodb": {"ThrottlingException", "InternalFailure"},
    "s3": {"SlowDown", "InternalError"},
    "kms": {"ThrottlingException", "InternalFailure"},
}


@pytest.mark.parametrize("service", sorted(CALLS))
def test_each_service_gets_its_own_throttle_and_server_error_through_botocores_parser(
    endpoint: str, injected: Path, service: str
) -> None:
    # GIVEN every request failing, and clients made after the hook is installed (as a cold start makes them)
    faults.install(AwsFaults(rate=1.0, log=str(injected), seed=7))
    client = _client(endpoint, service)
    codes = set()
    for _ in range(12):
        with pytest.raises(ClientError) as caught:
            CALLS[service](client)
        codes.add(caught.value.response["Error"]["Code"])
    # THEN botocore parsed both kinds, in the service's own protocol, and each was logged
    assert codes == EXPECTED[service]
    assert len(faults.injected(injected)) == 12
    assert {service} == {line[1] for line in faults.injected(injected)}


def test_botocores_retries_absorb_occasional_faults_and_exempt_clients_see_none(endpoint: str, injected: Path) -> None:
    faults.install(AwsFaults(rate=0.3, services=("sqs",), log=str(injected), seed=3))
    # GIVEN a client with botocore's standard retries (5 attempts) and 30% of its requests failing
    retried = _client(endpoint, "sqs", attempts=5)
    answers = [retried.list_queues()["ResponseMetadata"]["RetryAttempts"] for _ in range(40)]
    # THEN every call succeeded, some only after retries, and the faults were really sent back to botocore
    assert sum(answers) > 0
    assert sum(answers) == len(faults.injected(injected))
    # AND a session of the load test itself is exempt; a service not listed is never touched
    clean = faults.exempt(boto3.session.Session(region_name=REGION)).client("sqs", endpoint_url=endpoint)
    before = len(faults.injected(injected))
    for _ in range(30):
        clean.list_queues()
        _client(endpoint, "sns").list_topics()
    assert len(faults.injected(injected)) == before


def test_a_storm_is_on_while_its_flag_file_exists(endpoint: str, injected: Path, tmp_path: Path) -> None:
    flag = tmp_path / "storm"
    faults.install(AwsFaults(rate=0.0, storm_flag=str(flag), storm_rate=1.0, log=str(injected)))
    client = _client(endpoint, "dynamodb")
    client.list_tables()
    flag.touch()
    with pytest.raises(ClientError):
        client.list_tables()
    flag.unlink()
    client.list_tables()
    assert len(faults.injected(injected)) == 1


def test_fault_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        AwsFaults(rate=1.5)
    with pytest.raises(ValueError, match="no fault injection for lambda"):
        AwsFaults(rate=0.1, services=("lambda",))
    assert AwsFaults.from_env({faults.ENV: AwsFaults(rate=0.2, services=("s3",)).to_env()}) == AwsFaults(
        rate=0.2, services=("s3",)
    )


def test_a_batch_whose_worker_died_comes_back_only_after_the_visibility_timeout(endpoint: str) -> None:
    sqs = _client(endpoint, "sqs", attempts=3)
    url = sqs.create_queue(QueueName="lost-batch", Attributes={"VisibilityTimeout": "4"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.send_message(QueueUrl=url, MessageBody='{"device_id": "d", "event_id": "e"}')
    seen: list[float] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(time.monotonic())
        if len(seen) == 1:
            raise WorkerLost("ProcessFunction: worker process died mid-invocation")
        return {"batchItemFailures": []}

    stop = threading.Event()
    function = LocalFunction("ProcessFunction", "fn", "handler.lambda_handler", 30, 512, {})
    trigger = QueueTrigger(url, arn, batch_size=10, batching_window_secs=0, report_batch_item_failures=True)
    poller = SqsPoller(sqs, function, handler, trigger, REGION, stop, retry_delay_secs=1)
    poller.start()
    try:
        deadline = time.monotonic() + 20
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        poller.join(timeout=10)
    # THEN the lost batch was neither deleted nor retried early (a raising handler's batch returns after 1 s):
    # SQS handed it back after its 4 s visibility timeout, and then it was handled and deleted
    assert len(seen) == 2 and seen[1] - seen[0] >= 3.5, seen
    assert poller.lost_batches == 1
    left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert left["Attributes"]["ApproximateNumberOfMessages"] == "0"


class _Slow(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path == "/slow":
            time.sleep(3)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_an_uplink_relays_is_cut_and_comes_back() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uplink = Uplink("127.0.0.1", server.server_address[1])
    try:
        # GIVEN a working link: requests pass and their bytes are counted
        assert requests.get(uplink.url + "/", timeout=5).text == "ok"
        assert uplink.bytes_up > 0
        # WHEN it is cut with a request in flight, THEN that request fails and new ones too
        result: dict[str, Any] = {}

        def slow() -> None:
            try:
                result["answer"] = requests.get(uplink.url + "/slow", timeout=10)
            except requests.ConnectionError as exc:
                result["error"] = exc

        in_flight = threading.Thread(target=slow)
        in_flight.start()
        time.sleep(0.5)
        uplink.cut()
        in_flight.join(timeout=15)
        assert "error" in result
        with pytest.raises(requests.ConnectionError):
            requests.get(uplink.url + "/", timeout=5)
        # AND once restored, it carries requests again
        uplink.restore()
        assert requests.get(uplink.url + "/", timeout=5).text == "ok"
    finally:
        uplink.close()
        server.shutdown()
