#!/bin/sh
ADDR=${TOKEN_AUTHORITY_ADDR:-localhost:8080}

# buf curl (npm: @bufbuild/buf), like grpcurl: the schema from the
# service's reflection, gRPC over cleartext HTTP/2.
buf curl --protocol grpc --http2-prior-knowledge \
  -d '{"channelName": "room-1", "uid": 42}' \
  "http://$ADDR/agora.token.v1.TokenService/BuildRtcToken"

# The Connect protocol and gRPC-Web need the schema from the .proto files
# (reflection is a gRPC service).
buf curl --protocol connect --schema proto \
  -d '{"channelName": "room-1", "uid": 42}' \
  "http://$ADDR/agora.token.v1.TokenService/BuildRtcToken"
