"""Person keys (docs/api.md, "Health codes"): HMAC-SHA256(town pepper, normalised resident ID number), lowercase hex.

The raw ID number is turned into a person key on arrival and is never stored or logged. The pepper is a
Secrets Manager secret (one ``GetSecretValue`` per cold start, cached by Powertools parameters).

>>> pk = person_key(pepper, "11010519491231002x")   # same key as for "11010519491231002X"
"""

import hashlib
import hmac
from typing import Any, Final

from anfang.contracts.identifiers import validate_resident_id

__all__ = ["MIN_PEPPER_BYTES", "PepperError", "load_pepper", "normalise_id_number", "person_key"]

#: Shortest town pepper accepted (the stack generates 32 random bytes).
MIN_PEPPER_BYTES: Final = 16


class PepperError(Exception):
    """The town pepper is missing or too short (the function must not start without it)."""


def load_pepper(secretsmanager: Any, secret_id: str) -> bytes:
    """The town pepper from Secrets Manager (Powertools parameters, cached per cold start)."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415 - cloud extra

    value = SecretsProvider(boto3_client=secretsmanager).get(secret_id, max_age=3600)
    if isinstance(value, str):
        pepper = value.encode("utf-8")
    elif isinstance(value, bytes):
        pepper = value
    else:
        raise PepperError(f"the pepper in {secret_id} is not a string")
    if len(pepper) < MIN_PEPPER_BYTES:
        raise PepperError(f"the pepper in {secret_id} must have at least {MIN_PEPPER_BYTES} bytes")
    return pepper


def normalise_id_number(id_number: str) -> str:
    """The canonical form of a resident ID number: trimmed, check character upper case; ``ValueError``."""
    return validate_resident_id(id_number.strip().upper())


def person_key(pepper: bytes, id_number: str) -> str:
    """HMAC-SHA256(pepper, normalised ID number) as lowercase hex: the only identity the table stores."""
    if len(pepper) < MIN_PEPPER_BYTES:
        raise ValueError(f"the town pepper must have at least {MIN_PEPPER_BYTES} bytes")
    return hmac.new(pepper, normalise_id_number(id_number).encode("ascii"), hashlib.sha256).hexdigest()
