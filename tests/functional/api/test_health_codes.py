"""Health-code routes in moto: deltas (ID numbers hashed on arrival), snapshots, purge, feature switch."""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import hmac
import json
import random
from typing import Any

import pytest
from chalice.test import Client

from anfang.contracts import ErrorCode, find_resident_ids
from anfang.contracts.healthcodes import LineRejection
from anfang.health_codes.keys import person_key
from anfang.health_codes.snapshots import SnapshotStore
from tests.api_stack import APP_DIR, PEPPER, Device, Stack, load_app, register_partner, signed

ID_NUMBER = "11010519491231002X"


def call(client: Client, who: Device, method: str, path: str, doc: Any = None) -> Any:
    body = b"" if doc is None else json.dumps(doc).encode()
    return client.http.request(method, path, headers=signed(who.signer, method, path, body), body=body)


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.body
    body = json.loads(response.body)
    assert body["code"] == code, body
    return body  # type: ignore[no-any-return]


def test_person_key_is_hmac_of_the_normalised_id_number() -> None:
    expected = hmac.new(PEPPER.encode(), ID_NUMBER.encode(), hashlib.sha256).hexdigest()
    assert person_key(PEPPER.encode(), " 11010519491231002x ") == expected


def test_given_deltas_then_valid_ones_are_stored_by_person_key_and_no_id_number_is_kept(
    client: Client, partner: Device, stack: Stack, aws: Any
) -> None:
    own_key = "ab" * 32
    deltas = [
        {"id_number": ID_NUMBER, "status": "green", "updated_at": "2026-11-29T08:00:00+08:00"},
        {"person_key": own_key, "status": "red", "updated_at": "2026-11-29T08:00:00+08:00"},
        {"id_number": "110105194912310021", "status": "green", "updated_at": "2026-11-29T08:00:00+08:00"},
        {"id_number": ID_NUMBER, "person_key": own_key, "status": "green", "updated_at": "2026-11-29T08:00:00Z"},
        {"person_key": own_key, "status": "purple", "updated_at": "2026-11-29T08:00:00Z"},
    ]
    response = call(client, partner, "POST", "/v1/health-codes", {"deltas": deltas})

    assert response.status_code == 200, response.body
    body = response.json_body
    assert (body["applied"], body["rejected"]) == (2, 3)
    assert [e["index"] for e in body["errors"]] == [2, 3, 4]
    assert not find_resident_ids(response.body.decode() if isinstance(response.body, bytes) else response.body)
    items = aws.client("dynamodb").scan(TableName=stack.names["health_codes"])["Items"]
    assert {i["person_key"]["S"]: i["status"]["S"] for i in items} == {
        person_key(PEPPER.encode(), ID_NUMBER): "green",
        own_key: "red",
    }
    assert not find_resident_ids(json.dumps(items))
    assert all(int(i["expires_at"]["N"]) > 0 and i["source_version"]["S"].startswith("delta:") for i in items)


def test_a_device_key_may_not_touch_health_codes(client: Client, device: Device) -> None:
    problem(call(client, device, "DELETE", "/v1/health-codes"), 403, "forbidden_role")
    problem(call(client, device, "POST", "/v1/health-codes/snapshots"), 403, "forbidden_role")


def test_delta_request_errors(client: Client, partner: Device) -> None:
    delta = {"person_key": "ab" * 32, "status": "green", "updated_at": "2026-11-29T08:00:00Z"}
    problem(call(client, partner, "POST", "/v1/health-codes", {"deltas": []}), 422, "payload_invalid")
    problem(call(client, partner, "POST", "/v1/health-codes", {"records": [delta]}), 422, "payload_invalid")
    problem(call(client, partner, "POST", "/v1/health-codes", {"deltas": [delta] * 10_001}), 413, "payload_too_large")
    bad_json = b'{"deltas": ['
    headers = signed(partner.signer, "POST", "/v1/health-codes", bad_json)
    problem(client.http.post("/v1/health-codes", headers=headers, body=bad_json), 400, "malformed_json")
    problem(client.http.post("/v1/health-codes", body=b"{}"), 401, "signature_missing")


def test_10000_deltas_in_one_request(client: Client, partner: Device, stack: Stack, aws: Any) -> None:
    deltas = [
        {"person_key": f"{n:064x}", "status": "yellow", "updated_at": "2026-11-29T08:00:00Z"} for n in range(10_000)
    ]
    response = call(client, partner, "POST", "/v1/health-codes", {"deltas": deltas})
    assert response.json_body == {"applied": 10_000, "superseded": 0, "rejected": 0, "errors": []}
    assert aws.client("dynamodb").describe_table(TableName=stack.names["health_codes"])["Table"]["ItemCount"] >= 0


def _stored(aws: Any, stack: Stack) -> dict[str, tuple[str, str]]:
    items = aws.client("dynamodb").scan(TableName=stack.names["health_codes"])["Items"]
    return {i["person_key"]["S"]: (i["status"]["S"], i["updated_at"]["S"]) for i in items}


def test_deltas_only_move_forward_whatever_the_order_they_arrive_in(
    stack: Stack, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEY_RATE_LIMIT_REQUESTS", "0")  # a thousand requests from one key in seconds
    app = load_app("anfang_api_app_ordering")
    partner = register_partner(app.services.registry)
    with Client(app.app, stage_name="test", project_dir=str(APP_DIR)) as client:
        _deltas_only_move_forward(client, partner, stack, aws)
    gc.unfreeze()


def _deltas_only_move_forward(client: Client, partner: Device, stack: Stack, aws: Any) -> None:
    # GIVEN 1,000 deltas for 100 persons: 10 each at random times over a day, some sharing a time with
    # another status (the tie goes to the more severe status)
    rng = random.Random(15)
    base = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    deltas = []
    for person in range(100):
        times = [base + dt.timedelta(minutes=rng.randrange(0, 24 * 60, 30)) for _ in range(10)]
        for at in times:
            status = rng.choice(["green", "yellow", "red"])
            deltas.append({"person_key": f"{person:064x}", "status": status, "updated_at": at.isoformat()})
    severity = {"green": 0, "yellow": 1, "red": 2}
    in_order = sorted(deltas, key=lambda d: (d["updated_at"], severity[d["status"]]))

    def send(batch: list[dict[str, str]], size: int) -> dict[str, int]:
        totals = {"applied": 0, "superseded": 0, "rejected": 0}
        for start in range(0, len(batch), size):
            answer = call(client, partner, "POST", "/v1/health-codes", {"deltas": batch[start : start + size]})
            assert answer.status_code == 200, answer.body
            for name in totals:
                totals[name] += answer.json_body[name]
        return totals

    # WHEN they are sent in time order, one delta a request ...
    sent_in_order = send(in_order, 1)
    expected = _stored(aws, stack)
    assert call(client, partner, "DELETE", "/v1/health-codes").status_code == 200
    # ... and, after a purge, in shuffled order, in requests of 1 and of 10 (the newest of a request wins in it)
    shuffled = list(deltas)
    rng.shuffle(shuffled)
    one_by_one = send(shuffled, 1)
    got_one_by_one = _stored(aws, stack)
    assert call(client, partner, "DELETE", "/v1/health-codes").status_code == 200
    rng.shuffle(shuffled)
    send(shuffled, 10)
    got_by_ten = _stored(aws, stack)
    # THEN the table ends the same: every person's newest delta, never an older one written last
    newest = {}
    for delta in in_order:
        newest[delta["person_key"]] = (delta["status"], dt.datetime.fromisoformat(delta["updated_at"]).isoformat())
    assert expected == newest
    assert got_one_by_one == expected
    assert got_by_ten == expected
    # ... in order every delta is applied but an exact repeat: a repeat is superseded when its request carries the
    # same signed second as the first (the source breaks ties), applied again otherwise (same status and time)
    repeats = sum(1 for a, b in zip(in_order, in_order[1:], strict=False) if a == b)
    assert sent_in_order["applied"] + sent_in_order["superseded"] == 1_000 and sent_in_order["superseded"] <= repeats
    # shuffled, the older ones that arrive late are counted as superseded
    assert one_by_one["applied"] + one_by_one["superseded"] == 1_000 and one_by_one["superseded"] > 0


def test_snapshot_lifecycle(client: Client, partner: Device, stack: Stack, aws: Any) -> None:
    created = call(client, partner, "POST", "/v1/health-codes/snapshots")
    assert created.status_code == 201, created.body
    snapshot = created.json_body
    assert snapshot["status"] == "awaiting_upload" and snapshot["upload_method"] == "PUT"
    assert stack.names["snapshot_bucket"] in snapshot["upload_url"]
    path = f"/v1/health-codes/snapshots/{snapshot['snapshot_id']}"

    status = call(client, partner, "GET", path)
    assert status.json_body["status"] == "awaiting_upload"
    assert status.json_body["counts"] == {"received": 0, "imported": 0, "rejected": 0}

    # WHEN the import function reports progress THEN the status route shows it
    store = SnapshotStore(
        aws.client("dynamodb"),
        aws.client("s3"),
        table_name=stack.names["snapshots"],
        bucket_name=stack.names["snapshot_bucket"],
    )
    assert store.snapshot_id_of(SnapshotStore.object_key(snapshot["snapshot_id"])) == snapshot["snapshot_id"]
    store.mark_importing(snapshot["snapshot_id"])
    rejected = LineRejection(line=2, code=ErrorCode.PAYLOAD_INVALID, detail="string_pattern_mismatch", field="x")
    store.mark_done(snapshot["snapshot_id"], received=3, imported=2, rejected=1, errors=[rejected])
    done = call(client, partner, "GET", path).json_body
    assert done["status"] == "imported" and done["counts"] == {"received": 3, "imported": 2, "rejected": 1}
    # ... with the rejected line's number and reason
    assert done["errors"] == [{"line": 2, "code": "payload_invalid", "detail": "string_pattern_mismatch", "field": "x"}]

    problem(call(client, partner, "GET", "/v1/health-codes/snapshots/" + "0" * 32), 404, "not_found")
    problem(call(client, partner, "GET", "/v1/health-codes/snapshots/not-an-id"), 404, "not_found")
    problem(call(client, partner, "POST", "/v1/health-codes/snapshots", {"x": 1}), 422, "payload_invalid")


def test_purge_deletes_every_record_and_snapshot_file(client: Client, partner: Device, stack: Stack, aws: Any) -> None:
    deltas = [{"person_key": f"{n:064x}", "status": "red", "updated_at": "2026-11-29T08:00:00Z"} for n in range(30)]
    call(client, partner, "POST", "/v1/health-codes", {"deltas": deltas})
    aws.client("s3").put_object(Bucket=stack.names["snapshot_bucket"], Key="snapshots/x.ndjson", Body=b"{}\n")

    response = call(client, partner, "DELETE", "/v1/health-codes")

    assert response.json_body == {"deleted": 30, "snapshots_deleted": 1}
    assert aws.client("dynamodb").scan(TableName=stack.names["health_codes"])["Items"] == []
    assert call(client, partner, "DELETE", "/v1/health-codes").json_body == {"deleted": 0, "snapshots_deleted": 0}


def test_health_code_storage_down_is_503(client: Client, partner: Device, stack: Stack, aws: Any) -> None:
    aws.client("dynamodb").delete_table(TableName=stack.names["health_codes"])
    delta = {"person_key": "ab" * 32, "status": "green", "updated_at": "2026-11-29T08:00:00Z"}
    problem(call(client, partner, "POST", "/v1/health-codes", {"deltas": [delta]}), 503, "retry_later")


def test_given_health_codes_switched_off_then_the_routes_are_404(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTH_CODES_ENABLED", "false")
    module = load_app("anfang_api_app_no_health")
    from tests.api_stack import register_partner

    partner = register_partner(module.services.registry)
    assert module.services.health is None
    with Client(module.app) as client:
        problem(call(client, partner, "DELETE", "/v1/health-codes"), 404, "not_found")


def test_bad_environment_fails_the_cold_start(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from anfang.api.settings import SettingsError

    monkeypatch.setenv("TOWN_CODE", "0123")
    monkeypatch.delenv("PROCESS_QUEUE_URL")
    with pytest.raises(SettingsError, match="PROCESS_QUEUE_URL, TOWN_CODE"):
        load_app("anfang_api_app_bad_env")
