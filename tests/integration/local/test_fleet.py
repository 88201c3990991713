"""Fleet commands against the local stack through the CLI: bulk import, retire, site update, partner keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from anfang.aws.registry import DeviceRegistry
from anfang.contracts import Signer, generate_private_key, new_event_id, public_key_to_text
from anfang.contracts.signing import SignatureError, authorize
from anfang_ops.cli import main as anfang
from anfang_ops.local import LocalStack
from anfang_ops.towns import find_town

ROOT = Path(__file__).resolve().parents[3]
TOWN = find_town(ROOT / "infra" / "towns", "gaoqing-tianzhen")
PREFIX = f"{TOWN.town.code}001320"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # the device watch runs only when a test runs it (run_schedule), never on its own timer mid-test
    with LocalStack(ROOT, tmp_path_factory.mktemp("fleet"), town=TOWN, schedule_interval_max_secs=3600) as local:
        yield local


def _lines(out: str) -> list[str]:
    """What the CLI printed: the in-process functions' JSON logs and metrics share this process's stdout."""
    return [line for line in out.splitlines() if not line.startswith('{"')]


def _registry(stack: LocalStack) -> DeviceRegistry:
    import boto3

    assert stack.info is not None
    client = boto3.client("dynamodb", region_name=stack.info.region, endpoint_url=stack.info.aws_endpoint_url)
    return DeviceRegistry(client, stack.info.outputs["DevicesTableName"], town_code=stack.info.town, cache_ttl_secs=0)


def _post(stack: LocalStack, signer: Signer, device_id: str) -> requests.Response:
    assert stack.info is not None
    event = {
        "event_id": new_event_id(),
        "event_type": "device_status",
        "device_id": device_id,
        "captured_at": "2026-01-05T08:00:00+08:00",
        "status": {"state": "online"},
    }
    body = json.dumps({"events": [event]}).encode()
    headers = signer.sign("POST", "/v1/events", body)
    return requests.post(stack.info.api_url + "/v1/events", data=body, headers=headers, timeout=30)


def test_bulk_import_is_idempotent_reports_per_row_and_a_dry_run_writes_nothing(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stack.info is not None
    gateway, camera = generate_private_key(), generate_private_key()
    gw, cam = public_key_to_text(gateway.public_key()), public_key_to_text(camera.public_key())
    csv_file = tmp_path / "devices.csv"
    csv_file.write_text(
        "device_id,site_id,site_type,site_name,public_key\n"
        f"{PREFIX}000101,tz-101,residential_closed,Lakeside Garden,{gw}\n"
        f"{PREFIX}000102,tz-101,residential_closed,Lakeside Garden,{gw}\n"
        f"{PREFIX}000103,tz-102,rural,Xiaozhuang village,{cam}\n"
        f"11010500001320000001,bj-1,rural,elsewhere,{cam}\n"
        f"{PREFIX}000104,tz-103,castle,Nowhere,{cam}\n",
        encoding="utf-8",
    )
    name = ["--stack-name", stack.info.stack_name]
    # WHEN ops dry-run the import, THEN each row says what it would do, the bad rows say why, nothing is written
    assert anfang(["devices", "import", str(csv_file), *name, "--dry-run"]) == 1
    out = _lines(capsys.readouterr().out)
    assert out[0].startswith(f"row 2 {PREFIX}000101: would register at site tz-101, would add key")
    assert "would bind key" in out[1] and "would add key" in out[2]
    assert out[3].startswith("row 5 11010500001320000001: error: device_id: its division prefix is not town")
    assert out[4].startswith(f"row 6 {PREFIX}000104: error: site_type 'castle'")
    assert out[5] == "5 rows: 3 changed, 0 unchanged, 2 failed (dry run: nothing written)"
    registry = _registry(stack)
    assert registry.device(f"{PREFIX}000101") is None
    # WHEN they import it, THEN the good rows are registered despite the bad ones, and the gateway key sends for both
    assert anfang(["devices", "import", str(csv_file), *name]) == 1
    assert _lines(capsys.readouterr().out)[-1] == "5 rows: 3 changed, 0 unchanged, 2 failed"
    signer = Signer(_kid(gw), gateway)
    assert _post(stack, signer, f"{PREFIX}000102").status_code == 202
    # AND a second import of the same file changes nothing, row by row
    assert anfang(["devices", "import", str(csv_file), *name]) == 1
    out = _lines(capsys.readouterr().out)
    assert out[0] == f"row 2 {PREFIX}000101: unchanged" and out[-1] == "5 rows: 0 changed, 3 unchanged, 2 failed"
    # AND a file without the needed columns is one line, exit 2
    (tmp_path / "bad.csv").write_text("device,site\n1,2\n")
    assert anfang(["devices", "import", str(tmp_path / "bad.csv"), *name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks the column(s) device_id" in err


def _kid(text: str) -> str:
    from anfang.contracts import key_id_for, load_public_key

    return key_id_for(load_public_key(text))


def test_a_retired_device_can_no_longer_send_and_its_site_can_be_renamed(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stack.info is not None
    name = ["--stack-name", stack.info.stack_name]
    gateway = generate_private_key()
    csv_file = tmp_path / "devices.csv"
    key = public_key_to_text(gateway.public_key())
    csv_file.write_text(
        "device_id,site_id,site_type,site_name,public_key\n"
        f"{PREFIX}000201,tz-201,enterprise_institution,Chemical plant,{key}\n"
        f"{PREFIX}000202,tz-201,enterprise_institution,Chemical plant,{key}\n"
    )
    assert anfang(["devices", "import", str(csv_file), *name]) == 0
    signer = Signer(_kid(key), gateway)
    assert _post(stack, signer, f"{PREFIX}000201").status_code == 202
    # WHEN ops retire one camera (a dry run first changes nothing)
    assert anfang(["devices", "retire", *name, "--device-id", f"{PREFIX}000201", "--dry-run"]) == 0
    assert _post(stack, signer, f"{PREFIX}000201").status_code == 202
    assert anfang(["devices", "retire", *name, "--device-id", f"{PREFIX}000201"]) == 0
    # THEN the gateway's key may no longer send for it (after the API's 30 s key cache), but still for its neighbour
    registry = _registry(stack)
    key_info = registry.resolve(_kid(key))
    assert key_info is not None and key_info.device_ids == {f"{PREFIX}000202"}
    with pytest.raises(SignatureError) as refused:  # the API's own check, on the registry's answer
        authorize(key_info, role="device", device_id=f"{PREFIX}000201")
    assert refused.value.code.value == "forbidden_device"
    authorize(key_info, role="device", device_id=f"{PREFIX}000202")
    record = registry.device(f"{PREFIX}000201")
    assert record is not None and record.retired_at is not None
    assert registry.keys_of(f"{PREFIX}000201") == []
    # AND an unknown device is one line
    capsys.readouterr()
    assert anfang(["devices", "retire", *name, "--device-id", f"{PREFIX}009999"]) == 2
    assert "is not registered" in capsys.readouterr().err
    # WHEN the site is renamed and retyped, THEN every device at it carries the new facts
    assert anfang(["sites", "update", *name, "--site-id", "tz-201", "--name", "Fine chemicals park"]) == 0
    assert anfang(["sites", "update", *name, "--site-id", "tz-201", "--site-type", "key_site"]) == 0
    sites = {registry.site_of(f"{PREFIX}00020{n}") for n in (1, 2)}
    assert {(s.site_type, s.name) for s in sites if s} == {("key_site", "Fine chemicals park")}
    assert anfang(["sites", "update", *name, "--site-id", "tz-404", "--name", "x"]) == 2
    assert anfang(["sites", "update", *name, "--site-id", "tz-201"]) == 2


def test_partner_keys_are_listed_and_revoked_and_device_keys_are_not_partners(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stack.info is not None
    name = ["--stack-name", stack.info.stack_name]
    commission = generate_private_key()
    (tmp_path / "hc.pub").write_text(public_key_to_text(commission.public_key()))
    assert (
        anfang(["partners", "register", *name, "--public-key", str(tmp_path / "hc.pub"), "--name", "Gaoqing HC"]) == 0
    )
    (key_id,) = _lines(capsys.readouterr().out)
    assert anfang(["partners", "list", *name, "--json"]) == 0
    (listed,) = [p for p in json.loads("\n".join(_lines(capsys.readouterr().out))) if p["key_id"] == key_id]
    assert (listed["role"], listed["name"], listed["status"]) == ("health_commission", "Gaoqing HC", "active")
    assert anfang(["partners", "revoke", *name, f"--key-id={key_id}", "--dry-run"]) == 0
    assert _registry(stack).resolve(key_id).status == "active"  # type: ignore[union-attr]
    assert anfang(["partners", "revoke", *name, f"--key-id={key_id}"]) == 0
    assert anfang(["partners", "list", *name]) == 0
    line = next(line for line in _lines(capsys.readouterr().out) if line.startswith(key_id))
    assert "revoked" in line
    # a device key is not a partner's: refused in one line
    device_keys = [k for d in _registry(stack).devices() for k in _registry(stack).keys_of(d.device_id)]
    assert device_keys
    assert anfang(["partners", "revoke", *name, f"--key-id={device_keys[0].key_id}"]) == 2
    assert "is a device key" in capsys.readouterr().err
    assert anfang(["partners", "revoke", *name, "--key-id", "nope"]) == 2
    # a key id may start with "-" (base64url): the --key-id=K form always parses


def test_devices_list_and_silent_show_last_seen_and_the_watch_reports_a_silence_once(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime as dt

    import boto3

    from anfang.aws.registry import Site

    assert stack.info is not None
    name = ["--stack-name", stack.info.stack_name]
    client = boto3.client("dynamodb", region_name=stack.info.region, endpoint_url=stack.info.aws_endpoint_url)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    old = DeviceRegistry(client, stack.info.outputs["DevicesTableName"], town_code=stack.info.town, now=lambda: past)
    # GIVEN a camera that posts now, and a village camera registered three hours ago and never heard from
    talker, mute = f"{PREFIX}000301", f"{PREFIX}000302"
    old.register_device(talker, Site("tz-301", "residential_closed", "Riverside"))
    old.register_device(mute, Site("tz-302", "rural", "Hilltop village"))
    private = generate_private_key()
    key = _registry(stack).add_key(private.public_key(), role="device", device_ids=[talker])
    assert _post(stack, Signer(key.key_id, private), talker).status_code == 202
    # WHEN ops list the devices
    capsys.readouterr()
    assert anfang(["devices", "list", *name, "--json"]) == 0
    out = capsys.readouterr().out
    rows = {r["device_id"]: r for r in json.loads(out[out.index("[\n") :])}
    # THEN the talker is online with a last-seen time, the mute one silent and never seen
    assert rows[talker]["state"] == "online" and rows[talker]["last_seen"] != "never"
    assert rows[mute]["state"] == "silent" and rows[mute]["last_seen"] == "never"
    assert anfang(["devices", "list", *name]) == 0
    assert any(line.startswith("online rate: ") for line in _lines(capsys.readouterr().out))
    # AND `devices silent` names the mute one, not reported yet
    assert anfang(["devices", "silent", *name]) == 0
    lines = _lines(capsys.readouterr().out)
    assert any(line.startswith(mute) and line.endswith("not reported yet") for line in lines)
    assert not any(line.startswith(talker) for line in lines)
    # WHEN the device watch runs twice on its schedule
    first = stack.run_schedule("DeviceWatchFunction")
    second = stack.run_schedule("DeviceWatchFunction")
    # THEN the silence is reported once, and `devices silent` says under which event id
    assert mute in first["reported"] and mute not in second["reported"]
    assert anfang(["devices", "silent", *name, "--json"]) == 0
    out = capsys.readouterr().out
    silent = {r["device_id"]: r for r in json.loads(out[out.index("[\n") :])}
    assert silent[mute]["reported_event_id"] is not None


def test_devices_silent_notify_reports_a_new_silence_from_the_cli_once(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime as dt

    import boto3

    from anfang.aws.registry import Site

    assert stack.info is not None
    name = ["--stack-name", stack.info.stack_name]
    client = boto3.client("dynamodb", region_name=stack.info.region, endpoint_url=stack.info.aws_endpoint_url)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    old = DeviceRegistry(client, stack.info.outputs["DevicesTableName"], town_code=stack.info.town, now=lambda: past)
    # GIVEN a key-site camera registered an hour ago and never heard from (threshold 30 min)
    mute = f"{PREFIX}000401"
    old.register_device(mute, Site("tz-401", "key_site", "Bus station"))
    # WHEN ops run `devices silent --notify` twice
    capsys.readouterr()
    assert anfang(["devices", "silent", *name, "--notify"]) == 0
    first = _lines(capsys.readouterr().out)
    assert anfang(["devices", "silent", *name, "--notify"]) == 0
    second = _lines(capsys.readouterr().out)
    # THEN the first run reports it, the second says under which event id it was reported
    assert any(line.startswith(mute) and line.endswith("reported now") for line in first)
    assert any(line.startswith(mute) and " reported " in line and "now" not in line for line in second)
