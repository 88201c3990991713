#!/usr/bin/env bash
# Upload a full health-code snapshot with bash, openssl (3.x), curl and jq: declare, PUT, poll.
#
#   API=https://<api-id>.execute-api.<region>.amazonaws.com/v1-stage KEY=commission.key.pem KEYID=<key id> \
#       ./snapshot-upload.sh snapshot.ndjson
#
# 1. POST /v1/health-codes/snapshots with the file's exact size and SHA-256 (signed, see signed-request.sh);
# 2. PUT the file to the presigned URL with the headers the answer names: they are signed into the URL, so
#    S3 takes only this file, and only once (If-None-Match: *);
# 3. poll GET /v1/health-codes/snapshots/<id> until imported or failed (at most POLL_SECS, default 300).
set -euo pipefail
FILE=$1
HERE=$(dirname "$0")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

SIZE=$(stat -c %s "$FILE")
SHA=$(openssl dgst -sha256 -r "$FILE" | cut -d' ' -f1)
printf '{"size_bytes": %s, "sha256": "%s"}' "$SIZE" "$SHA" > "$WORK/declare.json"
"$HERE/signed-request.sh" POST /v1/health-codes/snapshots "$WORK/declare.json" > "$WORK/created"
if ! tail -1 "$WORK/created" | grep -q '^HTTP 201$'; then cat "$WORK/created" >&2; exit 1; fi
head -1 "$WORK/created" > "$WORK/created.json"
ID=$(jq -r .snapshot_id "$WORK/created.json")
echo "snapshot $ID: $SIZE bytes, sha256 $SHA"

curl -sS --fail-with-body -X PUT --data-binary @"$FILE" \
    -H "Content-Type: application/x-ndjson" \
    -H "Content-Length: $SIZE" \
    -H "x-amz-checksum-sha256: $(jq -r '.upload_headers["x-amz-checksum-sha256"]' "$WORK/created.json")" \
    -H "If-None-Match: *" \
    "$(jq -r .upload_url "$WORK/created.json")"
echo "uploaded"

DEADLINE=$(( $(date +%s) + ${POLL_SECS:-300} ))
while :; do
    "$HERE/signed-request.sh" GET "/v1/health-codes/snapshots/$ID" | head -1 > "$WORK/status.json"
    STATUS=$(jq -r .status "$WORK/status.json")
    if [ "$STATUS" = imported ] || [ "$STATUS" = failed ] || [ "$(date +%s)" -ge "$DEADLINE" ]; then break; fi
    sleep 5
done
cat "$WORK/status.json"
