#!/usr/bin/env bash
# Sign and send one request to an anfang ingest API with nothing but bash, openssl (3.x) and curl.
#
#   API=https://<api-id>.execute-api.<region>.amazonaws.com/v1-stage KEY=device.key.pem KEYID=<key id> \
#       ./signed-request.sh POST /v1/events batch.json
#
# METHOD PATH [BODY_FILE]; without a body file the body is empty (GET, DELETE).
# KEY is the Ed25519 private key (PKCS#8 PEM); KEYID is the id the registry gave the key (its RFC 7638
# thumbprint). PATH is the path you call, without the API Gateway stage prefix.
set -euo pipefail
METHOD=$1
REQ_PATH=$2
BODY=${3:-/dev/null}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cat "$BODY" > "$WORK/body"

DIGEST="sha-256=:$(openssl dgst -sha256 -binary "$WORK/body" | base64 -w0):"
CREATED=$(date +%s)
NONCE=$(openssl rand 16 | base64 -w0 | tr '+/' '-_' | tr -d '=')
PARAMS="(\"@method\" \"@path\" \"content-digest\" \"content-type\");created=$CREATED;keyid=\"$KEYID\";nonce=\"$NONCE\""
printf '"@method": %s\n"@path": %s\n"content-digest": %s\n"content-type": application/json\n"@signature-params": %s' \
    "$METHOD" "$REQ_PATH" "$DIGEST" "$PARAMS" > "$WORK/base"
SIGNATURE=$(openssl pkeyutl -sign -rawin -inkey "$KEY" -in "$WORK/base" | base64 -w0)

curl -sS -X "$METHOD" "$API$REQ_PATH" \
    -H "Content-Type: application/json" \
    -H "Content-Digest: $DIGEST" \
    -H "Signature-Input: sig1=$PARAMS" \
    -H "Signature: sig1=:$SIGNATURE:" \
    --data-binary @"$WORK/body" \
    -w '\nHTTP %{http_code}\n'
