"""The device watch's thresholds and silence event ids (no AWS)."""

from __future__ import annotations

import datetime as dt

import pytest

from anfang.aws.environment import SettingsError
from anfang.contracts.identifiers import event_id_time, validate_event_id
from anfang.pipeline.settings import (
    DEFAULT_SILENT_AFTER_SECS,
    DEFAULT_SILENT_DEVICE_THRESHOLDS,
    DeviceWatchSettings,
    SiteThresholds,
)
from anfang.pipeline.watch import silence_event_id

ENV = {
    "TOWN_CODE": "370322",
    "DEVICES_TABLE_NAME": "devices",
    "LAST_SEEN_TABLE_NAME": "last-seen",
    "POLICE_VIDEO_TOPIC_ARN": "arn:aws-cn:sns:cn-north-1:123456789012:police",
    "PSEUDONYM_SECRET_ARN": "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:p",
    "RAW_IMAGE_BUCKET_NAME": "raw",
    "IMAGE_BUCKET_NAME": "images",
}


def test_the_default_thresholds_are_the_template_parameters_default() -> None:
    from pathlib import Path

    from anfang_ops.template import load_template

    template = load_template(Path(__file__).resolve().parents[3] / "template.yaml")
    assert template["Parameters"]["SilentDeviceThresholds"]["Default"] == DEFAULT_SILENT_DEVICE_THRESHOLDS
    settings = DeviceWatchSettings.from_env(ENV)
    assert settings.silent_after_secs("residential_closed") == 1800
    assert settings.silent_after_secs("rural") == 7200


def test_a_site_type_not_named_gets_the_default_threshold() -> None:
    settings = DeviceWatchSettings.from_env({**ENV, "SILENT_DEVICE_THRESHOLDS": "rural=600"})
    assert settings.silent_after_secs("rural") == 600
    assert settings.silent_after_secs("key_site") == DEFAULT_SILENT_AFTER_SECS
    assert SiteThresholds.parse("key_site=900, rural=7200").silent_after_secs("key_site") == 900


@pytest.mark.parametrize("text", ["farm=600", "rural", "rural=soon", "rural=-5", "rural=30"])
def test_a_bad_threshold_fails_the_cold_start_naming_the_variable(text: str) -> None:
    with pytest.raises(SettingsError, match="SILENT_DEVICE_THRESHOLDS"):
        DeviceWatchSettings.from_env({**ENV, "SILENT_DEVICE_THRESHOLDS": text})


def test_a_silence_event_id_is_a_uuidv7_of_the_crossing_fixed_by_device_and_start() -> None:
    first = silence_event_id("37032201001320000001", 1_764_000_000, 1_764_001_800)
    validate_event_id(first)
    assert event_id_time(first) == dt.datetime.fromtimestamp(1_764_001_800, dt.UTC)
    assert first == silence_event_id("37032201001320000001", 1_764_000_000, 1_764_001_800)
    assert first != silence_event_id("37032201001320000002", 1_764_000_000, 1_764_001_800)
    assert first != silence_event_id("37032201001320000001", 1_764_000_001, 1_764_001_800)
