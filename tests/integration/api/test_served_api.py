"""The API over real HTTP against a moto server: signed batches in, messages on the queues, images in the bucket."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import requests

from anfang.contracts import QueuedEvent
from tests.api_stack import ROOT, alarm_event, batch, face_event, fixture_image, signed
from tests.integration.api.conftest import ServedApi


def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return messages
        for message in got:
            messages.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_given_a_signed_batch_over_http_then_events_are_on_the_queues_and_images_in_the_bucket(
    served_api: ServedApi,
) -> None:
    sqs = served_api.session.client("sqs")
    for queue in ("analyse_queue", "process_queue"):  # other tests of the package share the stack
        receive_all(sqs, served_api.stack.names[queue])
    faces = [face_event(fixture_image(name)) for name in ("face_crop.jpg", "astronaut_512.jpg")]
    alarms = [alarm_event() for _ in range(3)]
    body = batch(*faces, *alarms)
    headers = signed(served_api.device.signer, "POST", "/v1/events", body)

    response = requests.post(served_api.url + "/v1/events", data=body, headers=headers, timeout=30)

    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 5
    analysed = receive_all(sqs, served_api.stack.names["analyse_queue"])
    processed = receive_all(sqs, served_api.stack.names["process_queue"])
    assert sorted(m["event_id"] for m in analysed) == sorted(e["event_id"] for e in faces)
    assert sorted(m["event_id"] for m in processed) == sorted(e["event_id"] for e in alarms)
    s3 = served_api.session.client("s3")
    for message in analysed:
        queued = QueuedEvent.model_validate(message)
        (stored,) = queued.images
        obj = s3.get_object(Bucket=served_api.stack.names["raw_bucket"], Key=stored.ref)
        assert obj["Body"].read().startswith(b"\xff\xd8\xff")
        assert obj["ServerSideEncryption"] == "aws:kms"
        assert (stored.width, stored.height) != (0, 0)

    # and the same batch again is answered with duplicates, nothing new on the queues
    again = requests.post(
        served_api.url + "/v1/events",
        data=body,
        headers=signed(served_api.device.signer, "POST", "/v1/events", body),
        timeout=30,
    )
    assert again.json()["duplicate"] == 5
    assert receive_all(sqs, served_api.stack.names["process_queue"]) == []


def test_errors_over_http_are_problem_json_with_date(served_api: ServedApi) -> None:
    response = requests.post(served_api.url + "/v1/events", data=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["Date"]
    assert response.json()["code"] == "signature_missing"


def test_snapshot_upload_through_the_presigned_url(served_api: ServedApi) -> None:
    from anfang.health_codes.importer import s3_objects
    from anfang.health_codes.settings import ImportSettings
    from anfang.health_codes.wiring import build_importer
    from tests.s3_presign import s3_accepts

    line = {"person_key": "ab" * 32, "status": "green", "updated_at": "2026-11-29T08:00:00Z"}
    file = (json.dumps(line) + "\n").encode()
    api, signer = served_api.url, served_api.partner.signer

    def call(method: str, path: str, body: bytes = b"") -> requests.Response:
        return requests.request(method, api + path, data=body, headers=signed(signer, method, path, body), timeout=30)

    # the commission declares the file, then PUTs it with the headers it was told, then polls the status
    declared = json.dumps({"size_bytes": len(file), "sha256": hashlib.sha256(file).hexdigest()}).encode()
    created = call("POST", "/v1/health-codes/snapshots", declared)
    assert created.status_code == 201, created.text
    snapshot = created.json()
    url, headers = snapshot["upload_url"], snapshot["upload_headers"]
    assert s3_accepts(url, headers, served_api.session.get_credentials())  # what moto does not check, S3 would
    put = requests.put(url, data=file, headers=headers, timeout=30)
    assert put.status_code == 200, put.text
    # ... a second PUT through the same URL is refused (If-None-Match: *), even of the same file
    assert requests.put(url, data=file, headers=headers, timeout=30).status_code == 412
    bucket = served_api.stack.names["snapshot_bucket"]
    key = f"snapshots/{snapshot['snapshot_id']}.ndjson"
    assert served_api.session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read() == file

    # S3 notifies the import function (driven here with the event S3 sends)
    importer = build_importer(ImportSettings.model_validate(served_api.stack.env()), session=served_api.session)
    event = {"Records": [{"s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]}
    assert [importer.import_object(b, k).outcome for b, k in s3_objects(event)] == ["imported"]
    status = call("GET", f"/v1/health-codes/snapshots/{snapshot['snapshot_id']}")
    assert status.status_code == 200, status.text
    info = status.json()
    assert info["status"] == "imported" and info["counts"] == {"received": 1, "imported": 1, "rejected": 0}
    assert (info["size_bytes"], info["sha256"]) == (len(file), hashlib.sha256(file).hexdigest())


def test_the_documented_shell_recipe_signs_requests_the_api_accepts(served_api: ServedApi, tmp_path: Any) -> None:
    import os
    import shutil
    import subprocess

    from anfang.contracts import private_key_to_pem

    if not (shutil.which("openssl") and shutil.which("curl")):
        import pytest

        pytest.skip("needs openssl and curl")
    key = tmp_path / "device.key.pem"
    key.write_bytes(private_key_to_pem(served_api.device.private_key))
    body = tmp_path / "batch.json"
    event = alarm_event()
    body.write_bytes(batch(event))
    env = {**os.environ, "API": served_api.url, "KEY": str(key), "KEYID": served_api.device.info.key_id}
    script = ROOT / "docs" / "examples" / "signed-request.sh"

    out = subprocess.run(
        [str(script), "POST", "/v1/events", str(body)], env=env, capture_output=True, timeout=60, check=False
    )

    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert text.rstrip().endswith("HTTP 202"), text
    assert json.loads(text.splitlines()[0])["results"][0] == {
        "event_id": event["event_id"],
        "status": "accepted",
        "error": None,
    }


def test_the_documented_snapshot_recipe_uploads_a_file_the_import_accepts(served_api: ServedApi, tmp_path: Any) -> None:
    import os
    import shutil
    import subprocess

    import pytest

    from anfang.contracts import private_key_to_pem
    from anfang.health_codes.settings import ImportSettings
    from anfang.health_codes.wiring import build_importer

    if not all(shutil.which(tool) for tool in ("openssl", "curl", "jq")):
        pytest.skip("needs openssl, curl and jq")
    key = tmp_path / "commission.key.pem"
    key.write_bytes(private_key_to_pem(served_api.partner.private_key))
    snapshot = tmp_path / "snapshot.ndjson"
    lines = [{"person_key": f"{n:064x}", "status": "yellow", "updated_at": "2026-11-29T08:00:00Z"} for n in (1, 2)]
    snapshot.write_bytes(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    env = {**os.environ, "API": served_api.url, "KEY": str(key), "KEYID": served_api.partner.info.key_id}
    script = ROOT / "docs" / "examples" / "snapshot-upload.sh"
    run = [str(script), str(snapshot)]

    # GIVEN the documented steps, polling once (no import function runs beside this served API)
    out = subprocess.run(run, env={**env, "POLL_SECS": "0"}, capture_output=True, timeout=60, check=False)

    assert out.returncode == 0, out.stderr
    text = out.stdout.decode().splitlines()
    assert text[1] == "uploaded" and json.loads(text[-1])["status"] == "awaiting_upload", text
    snapshot_id = json.loads(text[-1])["snapshot_id"]
    # WHEN S3 notifies the import function, THEN the file is the declared one and is imported
    importer = build_importer(ImportSettings.model_validate(served_api.stack.env()), session=served_api.session)
    bucket = served_api.stack.names["snapshot_bucket"]
    result = importer.import_object(bucket, f"snapshots/{snapshot_id}.ndjson")
    assert result.outcome == "imported", result.error
    status = subprocess.run(
        [str(ROOT / "docs" / "examples" / "signed-request.sh"), "GET", f"/v1/health-codes/snapshots/{snapshot_id}"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    info = json.loads(status.stdout.decode().splitlines()[0])
    assert info["status"] == "imported" and info["counts"]["imported"] == 2
