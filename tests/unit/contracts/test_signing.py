"""The RFC 9421 signing profile: round trip, a tamper matrix with one code per failure, interop both ways."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, MappingKeyResolver, algorithms

from anfang.contracts import (
    ErrorCode,
    KeyInfo,
    MemoryNonceStore,
    SignatureError,
    Signer,
    Verifier,
    authorize,
    generate_private_key,
    key_id_for,
    load_public_key,
    public_key_to_pem,
    public_key_to_text,
)

NOW = 1_795_910_000
DEVICE = "33010600001320000001"
BODY = b'{"events":[]}'


class Keys:
    """A key resolver over a dict: the registry's contract, in memory."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyInfo] = {}

    def add(self, private_key: Ed25519PrivateKey, **fields: object) -> KeyInfo:
        public_key = private_key.public_key()
        info = KeyInfo(
            key_id=key_id_for(public_key), public_key=public_key, role="device", device_ids=frozenset({DEVICE})
        )
        info = replace(info, **fields)  # type: ignore[arg-type]
        self.keys[info.key_id] = info
        return info

    def resolve(self, key_id: str) -> KeyInfo | None:
        return self.keys.get(key_id)


@pytest.fixture
def private_key() -> Ed25519PrivateKey:
    return generate_private_key()


@pytest.fixture
def keys(private_key: Ed25519PrivateKey) -> Keys:
    keys = Keys()
    keys.add(private_key)
    return keys


@pytest.fixture
def verifier(keys: Keys) -> Verifier:
    return Verifier(keys, MemoryNonceStore(clock=lambda: NOW), clock=lambda: NOW)


def _signer(private_key: Ed25519PrivateKey) -> Signer:
    return Signer(key_id_for(private_key.public_key()), private_key, clock=lambda: NOW)


def _code(call: Callable[[], object]) -> ErrorCode:
    with pytest.raises(SignatureError) as info:
        call()
    return info.value.code


def test_round_trip(private_key: Ed25519PrivateKey, verifier: Verifier) -> None:
    headers = _signer(private_key).sign("POST", "/v1/events", BODY)
    verified = verifier.verify("POST", "/v1/events", headers, BODY)
    assert verified.key.device_ids == {DEVICE}
    assert verified.created == NOW
    assert headers["Signature-Input"].startswith('sig1=("@method" "@path" "content-digest" "content-type");created=')


def test_header_names_are_case_insensitive(private_key: Ed25519PrivateKey, verifier: Verifier) -> None:
    headers = {k.lower(): v for k, v in _signer(private_key).sign("POST", "/v1/events", BODY).items()}
    assert verifier.verify("POST", "/v1/events", headers, BODY).key.role == "device"


# ---------------------------------------------------------------------------------------------------- tamper matrix


def _tampered(headers: dict[str, str], name: str, value: str) -> dict[str, str]:
    return {**headers, name: value}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("body byte", ErrorCode.DIGEST_MISMATCH),
        ("content-digest header matching a new body", ErrorCode.SIGNATURE_INVALID),
        ("content-type header", ErrorCode.SIGNATURE_INVALID),
        ("method", ErrorCode.SIGNATURE_INVALID),
        ("path", ErrorCode.SIGNATURE_INVALID),
        ("stage-prefixed path", ErrorCode.SIGNATURE_INVALID),
        ("signature byte", ErrorCode.SIGNATURE_INVALID),
        ("created parameter", ErrorCode.SIGNATURE_INVALID),
        ("nonce parameter", ErrorCode.SIGNATURE_INVALID),
        ("covered components", ErrorCode.SIGNATURE_INVALID),
        ("alg parameter", ErrorCode.SIGNATURE_INVALID),
        ("short nonce", ErrorCode.SIGNATURE_INVALID),
        ("malformed signature-input", ErrorCode.SIGNATURE_INVALID),
        ("other label", ErrorCode.SIGNATURE_INVALID),
        ("no signature", ErrorCode.SIGNATURE_MISSING),
        ("no content-digest", ErrorCode.DIGEST_MISMATCH),
    ],
)
def test_each_single_change_is_rejected_with_its_code(
    case: str, expected: ErrorCode, private_key: Ed25519PrivateKey, verifier: Verifier
) -> None:
    signer = _signer(private_key)
    headers = signer.sign("POST", "/v1/events", BODY)
    method, path, body = "POST", "/v1/events", BODY
    sig_input = headers["Signature-Input"]
    if case == "body byte":
        body = BODY.replace(b"[", b"{")
    elif case == "content-digest header matching a new body":
        body = b'{"events":[{}]}'
        headers = _tampered(headers, "Content-Digest", signer.sign("POST", "/v1/events", body)["Content-Digest"])
    elif case == "content-type header":
        headers = _tampered(headers, "Content-Type", "text/plain")
    elif case == "method":
        method = "PUT"
    elif case == "path":
        path = "/v1/health-codes"
    elif case == "stage-prefixed path":
        headers = signer.sign("POST", "/prod/v1/events", BODY)
    elif case == "signature byte":
        sig = headers["Signature"]
        headers = _tampered(headers, "Signature", sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:])
    elif case == "created parameter":
        headers = _tampered(headers, "Signature-Input", sig_input.replace(f"created={NOW}", f"created={NOW - 1}"))
    elif case == "nonce parameter":
        nonce = sig_input.split('nonce="')[1].split('"')[0]
        other = ("B" if nonce[0] == "A" else "A") + nonce[1:]
        headers = _tampered(headers, "Signature-Input", sig_input.replace(nonce, other))
    elif case == "covered components":
        headers = _tampered(headers, "Signature-Input", sig_input.replace(' "content-type"', ""))
    elif case == "alg parameter":
        headers = _tampered(headers, "Signature-Input", sig_input + ';alg="rsa-pss-sha512"')
    elif case == "short nonce":
        headers = signer.sign("POST", "/v1/events", BODY, nonce="c2hvcnQ")
    elif case == "malformed signature-input":
        headers = _tampered(headers, "Signature-Input", sig_input.replace(")", ""))
    elif case == "other label":
        headers = {k: v.replace("sig1=", "sig2=", 1) if k.startswith("Signature") else v for k, v in headers.items()}
    elif case == "no signature":
        headers = {k: v for k, v in headers.items() if k != "Signature"}
    elif case == "no content-digest":
        headers = {k: v for k, v in headers.items() if k != "Content-Digest"}
    assert _code(lambda: verifier.verify(method, path, headers, body)) is expected


@pytest.mark.parametrize(("offset", "ok"), [(-300, True), (-301, False), (60, True), (61, False)])
def test_freshness_window_boundaries(offset: int, ok: bool, private_key: Ed25519PrivateKey, verifier: Verifier) -> None:
    headers = _signer(private_key).sign("POST", "/v1/events", BODY, created=NOW + offset)
    if ok:
        assert verifier.verify("POST", "/v1/events", headers, BODY).created == NOW + offset
    else:
        assert _code(lambda: verifier.verify("POST", "/v1/events", headers, BODY)) is ErrorCode.SIGNATURE_EXPIRED


def test_reused_nonce_is_a_replay(private_key: Ed25519PrivateKey, verifier: Verifier) -> None:
    headers = _signer(private_key).sign("POST", "/v1/events", BODY)
    verifier.verify("POST", "/v1/events", headers, BODY)
    assert _code(lambda: verifier.verify("POST", "/v1/events", headers, BODY)) is ErrorCode.SIGNATURE_REPLAYED


def test_a_forged_request_does_not_burn_the_nonce(private_key: Ed25519PrivateKey, verifier: Verifier) -> None:
    headers = _signer(private_key).sign("POST", "/v1/events", BODY)
    assert _code(lambda: verifier.verify("PUT", "/v1/events", headers, BODY)) is ErrorCode.SIGNATURE_INVALID
    assert verifier.verify("POST", "/v1/events", headers, BODY).key.device_ids == {DEVICE}


def test_nonce_is_forgotten_after_its_ttl(private_key: Ed25519PrivateKey) -> None:
    now = [float(NOW)]
    keys = Keys()
    keys.add(private_key)
    verifier = Verifier(keys, MemoryNonceStore(clock=lambda: now[0]), clock=lambda: now[0])
    headers = _signer(private_key).sign("POST", "/v1/events", BODY, nonce="A" * 22)
    verifier.verify("POST", "/v1/events", headers, BODY)
    now[0] += 601  # past the nonce TTL, but then the signature is stale too: replays stay impossible
    assert _code(lambda: verifier.verify("POST", "/v1/events", headers, BODY)) is ErrorCode.SIGNATURE_EXPIRED


def test_unknown_key(verifier: Verifier) -> None:
    stranger = generate_private_key()
    headers = _signer(stranger).sign("POST", "/v1/events", BODY)
    assert _code(lambda: verifier.verify("POST", "/v1/events", headers, BODY)) is ErrorCode.UNKNOWN_KEY


def test_revoked_key(private_key: Ed25519PrivateKey, keys: Keys, verifier: Verifier) -> None:
    keys.add(private_key, status="revoked")
    headers = _signer(private_key).sign("POST", "/v1/events", BODY)
    assert _code(lambda: verifier.verify("POST", "/v1/events", headers, BODY)) is ErrorCode.KEY_REVOKED


@pytest.mark.parametrize(
    "window",
    [
        {"not_before": dt.datetime.fromtimestamp(NOW + 3600, dt.UTC)},
        {"not_after": dt.datetime.fromtimestamp(NOW - 1, dt.UTC)},
    ],
)
def test_key_outside_its_validity_window(
    window: dict[str, dt.datetime], private_key: Ed25519PrivateKey, keys: Keys, verifier: Verifier
) -> None:
    keys.add(private_key, **window)
    headers = _signer(private_key).sign("POST", "/v1/events", BODY)
    assert _code(lambda: verifier.verify("POST", "/v1/events", headers, BODY)) is ErrorCode.KEY_INACTIVE


def test_key_bound_to_another_device(private_key: Ed25519PrivateKey, verifier: Verifier) -> None:
    verified = verifier.verify("POST", "/v1/events", _signer(private_key).sign("POST", "/v1/events", BODY), BODY)
    authorize(verified.key, role="device", device_id=DEVICE)
    code = _code(lambda: authorize(verified.key, role="device", device_id="33010600001320000002"))
    assert code is ErrorCode.FORBIDDEN_DEVICE
    assert code.http_status == 403


def test_a_gateway_key_may_send_for_each_of_its_devices_and_no_other() -> None:
    public = generate_private_key().public_key()
    devices = frozenset({"33010600001320000001", "33010600001320000002"})
    key = KeyInfo(key_id=key_id_for(public), public_key=public, role="device", device_ids=devices)
    for device in devices:
        authorize(key, role="device", device_id=device)
    assert _code(lambda: authorize(key, role="device", device_id="33010600001320000003")) is ErrorCode.FORBIDDEN_DEVICE


def test_key_with_another_role(private_key: Ed25519PrivateKey, verifier: Verifier) -> None:
    verified = verifier.verify("POST", "/v1/events", _signer(private_key).sign("POST", "/v1/events", BODY), BODY)
    code = _code(lambda: authorize(verified.key, role="health_commission"))
    assert code is ErrorCode.FORBIDDEN_ROLE


def test_several_keys_per_device_for_rotation(keys: Keys, private_key: Ed25519PrivateKey, verifier: Verifier) -> None:
    new_key = generate_private_key()
    keys.add(new_key)
    for key in (private_key, new_key):
        assert verifier.verify("POST", "/v1/events", _signer(key).sign("POST", "/v1/events", BODY), BODY)


def test_public_key_text_forms_load_back(private_key: Ed25519PrivateKey) -> None:
    public_key = private_key.public_key()
    for text in (public_key_to_text(public_key), public_key_to_pem(public_key)):
        assert key_id_for(load_public_key(text)) == key_id_for(public_key)
    with pytest.raises(ValueError, match="32 bytes"):
        load_public_key("c2hvcnQ")


# ---------------------------------------------------------------------------------------------------- interop


def _prepared(body: bytes, path: str = "/v1/events") -> requests.PreparedRequest:
    return requests.Request(
        "POST", f"https://api.example.test{path}", data=body, headers={"Content-Type": "application/json"}
    ).prepare()


@pytest.mark.parametrize("include_alg", [False, True])
def test_request_signed_by_http_message_signatures_verifies_here(
    include_alg: bool, private_key: Ed25519PrivateKey, keys: Keys
) -> None:
    # GIVEN a request signed by an independent RFC 9421 implementation with this profile's components
    key_id = key_id_for(private_key.public_key())
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: private_key}),
    )
    request = _prepared(BODY)
    signer.sign(
        request,
        key_id=key_id,
        label="sig1",
        nonce="bm9uY2Utb2YtMTI4LWJpdHMtYXQtbGVhc3Q",
        include_alg=include_alg,
        covered_component_ids=("@method", "@path", "content-digest", "content-type"),
        body=BODY,
    )
    # WHEN our verifier checks it THEN it verifies
    verifier = Verifier(keys, MemoryNonceStore())
    verified = verifier.verify("POST", "/v1/events", dict(request.headers), BODY)
    assert verified.key.key_id == key_id


def test_request_signed_here_verifies_with_http_message_signatures(private_key: Ed25519PrivateKey) -> None:
    key_id = key_id_for(private_key.public_key())
    request = _prepared(BODY)
    request.headers.update(Signer(key_id, private_key).sign("POST", "/v1/events", BODY))
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={key_id: private_key.public_key()}, private_keys={}),
    )
    results = verifier.verify(
        request, require_components=("@method", "@path", "content-digest", "content-type"), body=BODY
    )
    assert [r.label for r in results] == ["sig1"]
    assert results[0].parameters["keyid"] == key_id
