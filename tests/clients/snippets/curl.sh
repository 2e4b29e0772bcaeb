#!/bin/sh
API=${TOKEN_AUTHORITY:-http://localhost:8080}

# Any RPC as JSON (the Connect protocol, unary): POST /<service>/<method>.
curl -sS "$API/agora.token.v1.TokenService/BuildRtcToken" \
  -H 'content-type: application/json' \
  -d '{"channelName": "room-1", "uid": 42, "role": "ROLE_PUBLISHER"}'
echo

# The compatible endpoint: the token as plain text.
curl -sS "$API/api/agora/token?channelName=room-1&uid=42"
