"""What S3 checks of a presigned URL and moto does not: the SigV4 query signature over the signed headers.

moto accepts any presigned request, so the tests verify the URL the way S3 does before they send it: the
canonical request is rebuilt from the URL's query and the values the request carries for each name in
``X-Amz-SignedHeaders`` (a missing header counts as empty), signed with the stack's credentials, and
compared with ``X-Amz-Signature``. botocore computes it (its own signer, not ours).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

__all__ = ["s3_accepts", "signed_headers"]


def signed_headers(url: str) -> list[str]:
    """The header names a presigned URL signs, as S3 reads them from ``X-Amz-SignedHeaders``."""
    return dict(parse_qsl(urlsplit(url).query))["X-Amz-SignedHeaders"].split(";")


def s3_accepts(url: str, headers: Mapping[str, str], credentials: Credentials, *, method: str = "PUT") -> bool:
    """Whether S3 would accept a request to ``url`` carrying ``headers`` (the signature check only)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    params = dict(query)
    given = params["X-Amz-Signature"]
    region = params["X-Amz-Credential"].split("/")[2]
    lower = {name.lower(): value for name, value in headers.items()}
    carried = {name: lower.get(name, "") for name in params["X-Amz-SignedHeaders"].split(";") if name != "host"}
    rest = [(k, v) for k, v in query if k != "X-Amz-Signature"]
    request = AWSRequest(
        method=method, url=urlunsplit(parts._replace(query=urlencode(rest, quote_via=quote))), headers=carried
    )
    request.context["timestamp"] = params["X-Amz-Date"]
    auth = S3SigV4QueryAuth(credentials, "s3", region, expires=int(params["X-Amz-Expires"]))
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    return hmac.compare_digest(expected, given)
