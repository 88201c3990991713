"""The device watch on moto: the real handler, the template's resources, a clock the test moves.

GIVEN devices registered in the template's registry and last-seen times in its last-seen table,
WHEN the scheduled function runs at chosen times,
THEN each silence past its site type's threshold reaches the police queue once, as a valid police record.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import jsonschema
import pytest

from anfang.aws.environment import SettingsError
from anfang.aws.last_seen import LastSeenTable, LastSeenWriter
from anfang.aws.registry import DeviceRegistry, Site
from anfang.contracts.identifiers import event_id_time, validate_event_id
from anfang.pipeline.settings import DeviceWatchSettings
from anfang.pipeline.watch_wiring import build_watch
from tests.pipeline_stack import REGION, drain, load_handler
from tests.template_stack import TOWN, deploy_test_stack

SCHEMA = Path(__file__).resolve().parents[3] / "schemas" / "records" / "v1" / "police_video.schema.json"
T0 = 1_764_000_000  # the test's "now" at the start
HOME = f"{TOWN}00001320000001"  # residential_closed: silent after 1800 s
FARM = f"{TOWN}00001320000002"  # rural: silent after 7200 s
GONE = f"{TOWN}00001320000003"  # retired: never silent
QUIET = f"{TOWN}00001320000004"  # registered, never seen


class Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


@dataclass
class Town:
    session: Any
    env: dict[str, str]
    registry: DeviceRegistry
    writer: LastSeenWriter
    police_queue: str
    clock: Clock
    handler: ModuleType

    def run(self, at: float) -> dict[str, Any]:
        """One scheduled run at ``at``, through the handler (the container's watch, built with the test's clock)."""
        self.clock.at = at
        result: dict[str, Any] = self.handler.handle(SCHEDULED, self.handler.watch(self.clock), town_code=TOWN)
        return result

    def police(self) -> list[dict[str, Any]]:
        return [json.loads(m["Body"]) for m in drain(self.session.client("sqs"), self.police_queue)]


SCHEDULED = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}


@pytest.fixture
def town(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Town]:
    session = boto3.session.Session(region_name=REGION)
    deployed = deploy_test_stack(session, "anfang-watch", visibility_timeout_max_secs=0)
    env = dict(deployed.functions["DeviceWatchFunction"].environment)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    dynamodb = session.client("dynamodb")
    registered = dt.datetime.fromtimestamp(T0 - 100, dt.UTC)
    registry = DeviceRegistry(dynamodb, env["DEVICES_TABLE_NAME"], town_code=TOWN, now=lambda: registered)
    registry.register_device(HOME, Site("home-1", "residential_closed", "Lakeside Garden"))
    registry.register_device(FARM, Site("farm-1", "rural", "East Village"))
    registry.register_device(GONE, Site("home-1", "residential_closed", "Lakeside Garden"))
    registry.retire_device(GONE)
    clock = Clock(T0)
    handler = load_handler("device_watch")
    handler.watch(clock)  # the cold start, with the test's clock (through the handler: its calls are the function's)
    writer = LastSeenWriter(dynamodb, env["LAST_SEEN_TABLE_NAME"], min_interval_secs=60)
    writer.touch([HOME, FARM, GONE], at=T0)
    yield Town(session, env, registry, writer, deployed.outputs["PoliceVideoQueueUrl"], clock, handler)


def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_a_silence_past_its_site_types_threshold_reaches_the_police_once(town: Town) -> None:
    # GIVEN HOME and FARM seen at T0, GONE seen and retired
    # WHEN the watch runs before any threshold
    first = town.run(T0 + 1000)
    # THEN nothing is sent; both live devices count as seen in the last hour; the retired one is not counted
    assert first["counts"]["DevicesSeen"] == 2
    assert first["counts"]["SilentDevices"] == 0
    assert first["reported"] == [] and town.police() == []

    # WHEN it runs past the residential threshold (1800 s) but not the rural one (7200 s)
    second = town.run(T0 + 1801)
    # THEN one offline record for HOME, a valid police record from the cloud
    assert second["reported"] == [HOME]
    assert second["counts"]["SilentDevices"] == 1
    (record,) = town.police()
    _validator().validate(record)
    assert record["device_id"] == HOME and record["event_type"] == "device_status"
    assert record["status"]["state"] == "offline"
    assert record["status"]["detail"].startswith("source=cloud;")
    assert record["site"]["site_type"] == "residential_closed"
    assert record["redaction"]["policy"].startswith("police_video@")
    validate_event_id(record["event_id"])
    assert event_id_time(record["event_id"]) == dt.datetime.fromtimestamp(T0 + 1800, dt.UTC)

    # WHEN it runs again during the same silence
    third = town.run(T0 + 3000)
    # THEN nothing is sent again (once per silence), though HOME is still silent
    assert third["reported"] == [] and third["counts"]["SilentDevices"] == 1
    assert town.police() == []

    # WHEN HOME is heard from again, then falls silent again
    town.writer.touch([HOME], at=T0 + 4000)
    assert town.run(T0 + 4100)["counts"]["SilentDevices"] == 0
    fourth = town.run(T0 + 4000 + 1800)
    # THEN the new silence is reported with a new event id
    assert fourth["reported"] == [HOME]
    (again,) = town.police()
    assert again["event_id"] != record["event_id"]

    # WHEN FARM passes the rural threshold
    fifth = town.run(T0 + 7200)
    # THEN FARM is reported, and the retired device never is
    assert fifth["reported"] == [FARM]
    assert [r["device_id"] for r in town.police()] == [FARM]
    # HOME, last seen at T0 + 4000, is silent yet seen within the hour
    assert fifth["counts"]["DevicesSeen"] == 1 and fifth["counts"]["SilentDevices"] == 2


def test_a_device_never_seen_is_silent_from_its_registration(town: Town) -> None:
    # GIVEN QUIET registered at T0 and never heard from
    at = dt.datetime.fromtimestamp(T0, dt.UTC)
    DeviceRegistry(
        town.session.client("dynamodb"), town.env["DEVICES_TABLE_NAME"], town_code=TOWN, now=lambda: at
    ).register_device(QUIET, Site("office-1", "apartment_office", "Tower A"))
    # WHEN the watch runs before and after its threshold (apartment_office: 3600 s)
    assert QUIET not in town.run(T0 + 3599)["reported"]
    late = town.run(T0 + 3600)
    # THEN it is reported once, its detail saying it was never seen
    assert QUIET in late["reported"]
    (record,) = [r for r in town.police() if r["device_id"] == QUIET]
    assert "last seen never" in record["status"]["detail"]


def test_a_silence_whose_record_was_not_published_is_sent_again_with_the_same_event_id(town: Town) -> None:
    # GIVEN HOME silent, and the police topic gone when the watch first runs
    sns = town.session.client("sns")
    topic = town.env["POLICE_VIDEO_TOPIC_ARN"]
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    sns.delete_topic(TopicArn=topic)
    failed = town.run(T0 + 1801)
    # THEN nothing is remembered as reported
    assert failed["failed"] == [HOME] and failed["reported"] == []
    assert LastSeenTable(town.session.client("dynamodb"), town.env["LAST_SEEN_TABLE_NAME"]).read()[HOME].silence is None
    # WHEN the topic is back and the watch runs again
    assert sns.create_topic(Name=topic.rpartition(":")[2])["TopicArn"] == topic
    for sub in subscriptions:
        sns.subscribe(
            TopicArn=topic,
            Protocol=sub["Protocol"],
            Endpoint=sub["Endpoint"],
            Attributes={"RawMessageDelivery": "true"},
        )
    retried = town.run(T0 + 2000)
    # THEN the silence is sent now, under the event id its first attempt had (time: the threshold's crossing)
    assert retried["reported"] == [HOME]
    (record,) = town.police()
    assert event_id_time(record["event_id"]) == dt.datetime.fromtimestamp(T0 + 1800, dt.UTC)


def test_the_watch_emits_devices_seen_with_the_town_dimension_only(
    town: Town, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    town.run(T0 + 10)
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    (document,) = [d for d in documents if "DevicesSeen" in d]
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["town"]]
    assert document["town"] == TOWN and document["DevicesSeen"] == [2.0] and document["SilentDevices"] == [0.0]


def test_a_police_policy_that_drops_the_status_fails_the_cold_start(town: Town, tmp_path: Path) -> None:
    policy = (
        Path(__file__).resolve().parents[3] / "layers/shared/python/anfang/policies/police_video.yaml"
    ).read_text()
    (tmp_path / "police_video.yaml").write_text(policy.replace("      status.detail: keep\n", ""))
    settings = DeviceWatchSettings.from_env({**town.env, "POLICY_DIR": str(tmp_path)})
    with pytest.raises(SettingsError, match="status.detail"):
        build_watch(settings, session=town.session)
