"""Hostile images and bodies: each gets its typed error, neighbours are accepted, the worker stays up."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import pytest
from chalice.test import Client
from PIL import Image

from tests.api_stack import Device, alarm_event, batch, face_event, fixture_image, image, signed


def post(client: Client, device: Device, body: bytes) -> Any:
    return client.http.post("/v1/events", headers=signed(device.signer, "POST", "/v1/events", body), body=body)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """The real face crop with its frame header (SOF) rewritten to claim other dimensions."""
    raw = bytearray(fixture_image())
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        at = raw.find(marker)
        if at > 0:
            raw[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(raw)
    raise AssertionError("no SOF marker in fixture")


def encoded(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, format=fmt)
    return out.getvalue()


JPEG = fixture_image()
CASES: dict[str, tuple[dict[str, Any], str]] = {
    "wrong base64": (image(JPEG, data="not*base64!"), "image_invalid"),
    "sha256 mismatch": (image(JPEG, sha256="0" * 64), "image_digest_mismatch"),
    "png declared as jpeg": (image(encoded("PNG"), content_type="image/jpeg"), "image_type_mismatch"),
    "png bomb (100k x 100k)": (image(png_claiming(100_000, 100_000), content_type="image/png"), "image_too_large"),
    "png over the pixel cap": (image(png_claiming(5000, 5000), content_type="image/png"), "image_too_large"),
    "jpeg bomb (65k x 65k)": (image(jpeg_claiming(65_000, 65_000)), "image_too_large"),
    "truncated jpeg": (image(JPEG[: len(JPEG) // 2]), "image_invalid"),
    "jpeg cut inside its header": (image(JPEG[:40]), "image_invalid"),
    "truncated png": (image(encoded("PNG")[:-20], content_type="image/png"), "image_invalid"),
    "gif renamed": (image(encoded("GIF")), "image_unsupported"),
    "tiff renamed": (image(encoded("TIFF")), "image_unsupported"),
    "not an image": (image(b"MZ\x90\x00 this is an executable"), "image_invalid"),
    "over 1 MiB": (image(b"\xff\xd8\xff" + b"\x00" * (1024 * 1024)), "image_too_large"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_hostile_image_gets_its_typed_error_and_neighbours_are_accepted(
    client: Client, device: Device, case: str
) -> None:
    bad_image, code = CASES[case]
    bad = face_event(images=[bad_image])
    response = post(client, device, batch(alarm_event(), bad, face_event()))

    assert response.status_code == 202, response.body
    results = response.json_body["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted"]
    assert results[1]["error"]["code"] == code, results[1]
    assert results[1]["event_id"] == bad["event_id"]


def test_all_hostile_images_in_one_batch_and_the_server_still_answers(client: Client, device: Device) -> None:
    events = [face_event(images=[bad]) for bad, _ in CASES.values()]
    response = post(client, device, batch(alarm_event(), *events))
    results = response.json_body["results"]
    assert results[0]["status"] == "accepted"
    assert [r["error"]["code"] for r in results[1:]] == [code for _, code in CASES.values()]
    assert post(client, device, batch(face_event())).json_body["accepted"] == 1
    assert client.http.get("/v1/health").status_code == 200


def test_a_scene_image_is_checked_like_a_face(client: Client, device: Device) -> None:
    event = face_event()
    event["images"].append(image(encoded("GIF"), role="scene"))
    results = post(client, device, batch(event)).json_body["results"]
    assert results[0]["error"] == {
        "code": "image_unsupported",
        "detail": "images.1: image format is not JPEG or PNG",
        "field": "images.1",
    }


def test_error_details_never_echo_payload_values(client: Client, device: Device) -> None:
    secret_id = "11010519491231002X"
    event = alarm_event(alarm={"kind": "loitering", "severity": "info", "zone": secret_id, "x": secret_id})
    response = post(client, device, batch(event))
    text = response.body.decode() if isinstance(response.body, bytes) else response.body
    assert response.json_body["results"][0]["error"]["field"] == "alarm.x"
    assert secret_id not in text
    assert base64.b64encode(JPEG)[:40].decode() not in str(response.json_body)
