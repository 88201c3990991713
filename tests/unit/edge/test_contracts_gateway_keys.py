"""contracts: a gateway key may be authorised for several devices (the edge agent signs for its site)."""

from __future__ import annotations

import pytest

from anfang.contracts import ErrorCode, KeyInfo, SignatureError, authorize, generate_private_key, key_id_for


def test_a_gateway_key_may_send_for_each_of_its_devices_and_no_other() -> None:
    public = generate_private_key().public_key()
    key = KeyInfo(
        key_id=key_id_for(public),
        public_key=public,
        role="device",
        device_ids=frozenset({"33010600001320000001", "33010600001320000002"}),
    )
    authorize(key, role="device", device_id="33010600001320000002")
    with pytest.raises(SignatureError) as info:
        authorize(key, role="device", device_id="33010600001320000003")
    assert info.value.code is ErrorCode.FORBIDDEN_DEVICE
    # a single-device key behaves as before
    single = KeyInfo(key_id="k", public_key=public, role="device", device_id="33010600001320000001")
    authorize(single, role="device", device_id="33010600001320000001")
    with pytest.raises(SignatureError):
        authorize(single, role="device", device_id="33010600001320000002")
