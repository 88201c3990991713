"""Identifier validators and finders: table tests with real-shaped values, property tests with hypothesis."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anfang.contracts import (
    event_id_time,
    find_device_ids,
    find_event_ids,
    find_mobiles,
    find_plates,
    find_resident_ids,
    new_event_id,
    parse_device_id,
    plate_province,
    resident_id_check_char,
    validate_device_id,
    validate_event_id,
    validate_mobile,
    validate_plate,
    validate_resident_id,
    validate_town_code,
)
from anfang.contracts.identifiers import PROVINCES

# ---------------------------------------------------------------------------------------------------- device ID


def test_device_id_is_split_into_its_five_fields() -> None:
    parts = parse_device_id("34020000001320000001")
    assert parts.division == "34020000"
    assert parts.industry == "00"
    assert parts.type == "132"
    assert parts.network == "0"
    assert parts.serial == "000001"
    assert "".join(parts) == "34020000001320000001"


@pytest.mark.parametrize(
    "value",
    [
        "3402000000132000000",  # 19 digits
        "340200000013200000011",  # 21 digits
        "3402000000132000000A",
        "04020000001320000001",  # division cannot start with 0
        "３４０２００００００１３２００００００１",  # full-width digits
        "",
    ],
)
def test_device_id_rejects_wrong_shapes(value: str) -> None:
    with pytest.raises(ValueError, match="device_id"):
        validate_device_id(value)


def test_device_id_finder_ignores_longer_digit_runs() -> None:
    text = "cam 34020000001320000001 and 440300000011800000201 and 33010600001320000009."
    assert find_device_ids(text) == ["34020000001320000001", "33010600001320000009"]


@pytest.mark.parametrize(("value", "ok"), [("330106", True), ("33010600", True), ("3301060", False), ("033010", False)])
def test_town_codes_are_6_or_8_digits(value: str, ok: bool) -> None:
    if ok:
        assert validate_town_code(value) == value
    else:
        with pytest.raises(ValueError, match="town code"):
            validate_town_code(value)


# ---------------------------------------------------------------------------------------------------- event ID


def test_new_event_ids_are_uuid7_sortable_by_time_and_carry_their_time() -> None:
    first = new_event_id(1_795_000_000_000)
    second = new_event_id(1_795_000_000_001)
    assert uuid.UUID(first).version == 7
    assert uuid.UUID(first).variant == uuid.RFC_4122
    assert validate_event_id(first) == first
    assert first < second
    assert event_id_time(first) == dt.datetime.fromtimestamp(1_795_000_000, tz=dt.UTC)


def test_new_event_ids_are_unique() -> None:
    ids = {new_event_id() for _ in range(10_000)}
    assert len(ids) == 10_000


@pytest.mark.parametrize(
    "value",
    [
        str(uuid.uuid4()),  # version 4
        "019ACE01-5C00-7000-8000-000000000001",  # upper case is not canonical
        "019ace015c0070008000000000000001",  # no hyphens
        "019ace01-5c00-7000-c000-000000000001",  # wrong variant
        "not-a-uuid",
    ],
)
def test_event_id_rejects_non_canonical_uuid7(value: str) -> None:
    with pytest.raises(ValueError, match="UUIDv7"):
        validate_event_id(value)


def test_event_id_finder() -> None:
    a, b = new_event_id(), new_event_id()
    assert find_event_ids(f"[{a}] and {b}; not {uuid.uuid4()}") == [a, b]


# ---------------------------------------------------------------------------------------------------- resident ID


@pytest.mark.parametrize(
    "value",
    [
        "11010519491231002X",  # the GB 11643 example, Beijing Chaoyang
        "11010519491231002x",  # lower-case check character is accepted and normalised
        "440308199901010012",
        "330106200002290010",  # 29 February of a leap year
    ],
)
def test_valid_resident_ids(value: str) -> None:
    assert validate_resident_id(value) == value.upper()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("110105194912310021", "check character"),
        ("330106190002290014", "real date"),  # 1900 is not a leap year
        ("330106199913010018", "18 characters"),  # month 13
        ("11010519491231002", "18 characters"),
        ("01010519491231002X", "18 characters"),  # address code cannot start with 0
        ("110105217001010011", "18 characters"),  # year 2170
        ("1101051949123100２X", "18 characters"),
    ],
)
def test_invalid_resident_ids(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_resident_id(value)


def test_resident_id_born_in_the_future_is_invalid() -> None:
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=400)
    first17 = f"330106{tomorrow:%Y%m%d}001"
    with pytest.raises(ValueError, match="future"):
        validate_resident_id(first17 + resident_id_check_char(first17))


@st.composite
def resident_ids(draw: st.DrawFn) -> str:
    region = draw(st.integers(100_000, 899_999))
    born = draw(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2020, 12, 31)))
    seq = draw(st.integers(0, 999))
    first17 = f"{region}{born:%Y%m%d}{seq:03d}"
    return first17 + resident_id_check_char(first17)


@given(resident_ids(), st.text(alphabet="姓名：， ", max_size=5), st.text(alphabet="，。住址 ", max_size=5))
def test_every_checksum_valid_id_is_accepted_and_found(value: str, before: str, after: str) -> None:
    assert validate_resident_id(value) == value
    assert find_resident_ids(before + value + after) == [value]


@given(resident_ids(), st.integers(0, 16), st.integers(1, 9))
def test_one_changed_digit_is_rejected_and_not_found(value: str, position: int, delta: int) -> None:
    digit = (int(value[position]) + delta) % 10
    changed = value[:position] + str(digit) + value[position + 1 :]
    # MOD 11-2 detects every single-digit substitution, so the check character no longer matches
    # (or the date or the address code became invalid).
    with pytest.raises(ValueError, match=r"check character|real date|18 characters|future"):
        validate_resident_id(changed)
    assert find_resident_ids(f"id {changed}.") == []


# ---------------------------------------------------------------------------------------------------- mobile


@pytest.mark.parametrize(
    ("value", "normalised"),
    [("13812345678", "13812345678"), ("+8619912345678", "19912345678"), ("8615012345678", "15012345678")],
)
def test_valid_mobiles(value: str, normalised: str) -> None:
    assert validate_mobile(value) == normalised


@pytest.mark.parametrize("value", ["12812345678", "1381234567", "138123456789", "138-1234-5678", "010-12345678"])
def test_invalid_mobiles(value: str) -> None:
    with pytest.raises(ValueError, match="mobile"):
        validate_mobile(value)


@given(st.sampled_from("3456789"), st.integers(0, 999_999_999), st.sampled_from(["", "+86", "86 ", "+86-"]))
def test_every_mobile_is_found(second: str, rest: int, prefix: str) -> None:
    mobile = f"1{second}{rest:09d}"
    assert validate_mobile(mobile) == mobile
    assert find_mobiles(f"电话{prefix}{mobile}，谢谢") == [mobile]


def test_mobile_finder_does_not_match_inside_longer_numbers() -> None:
    assert find_mobiles("id 11010519491231002X card 6222021381234567890") == []


# ---------------------------------------------------------------------------------------------------- plates


@pytest.mark.parametrize(
    "value",
    [
        "京A12345",
        "粤B8K2Q9",
        "沪C0000学",
        "浙AD12345",  # small new-energy, pure electric
        "苏EF71234",  # small new-energy, other
        "川A12345D",  # large new-energy
        "鲁Q1234挂",
    ],
)
def test_valid_plates(value: str) -> None:
    assert validate_plate(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "京A1234",  # too short
        "京A123456",  # 8 characters but not new-energy
        "京I12345",  # authority letter I is not used
        "京AO1234",  # serial letter O is not used
        "京a12345",  # lower case
        "AB12345",  # no province
        "京A·12345",  # separator
        "京AZ12345",  # Z is not a new-energy class letter
    ],
)
def test_invalid_plates(value: str) -> None:
    with pytest.raises(ValueError, match="plate"):
        validate_plate(value)


def test_plate_finder_prefers_the_8_character_new_energy_form() -> None:
    assert find_plates("车牌浙AD12345驶入，随后京A12345驶出") == ["浙AD12345", "京A12345"]


@given(st.sampled_from(PROVINCES), st.sampled_from("ABCDEFGHJKLMNPQRSTUVWXYZ"), st.integers(0, 99_999))
def test_every_ordinary_plate_is_found(province: str, authority: str, serial: int) -> None:
    plate = f"{province}{authority}{serial:05d}"
    assert validate_plate(plate) == plate
    assert find_plates(f"plate:{plate};") == [plate]


def test_generalize_keeps_the_province() -> None:
    assert plate_province("浙AD12345") == "浙"
