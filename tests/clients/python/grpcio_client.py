"""grpcio against the service: python grpcio_client.py <host:port> <gzip|identity>

Stubs generated from the repo's proto by grpcio-tools (tests/clients/setup.sh,
into tests/clients/gen/py). With gzip, every request is compressed
(channel-wide compression). Prints one line "RESULT <json>" for
tests/client_matrix.rs to check.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "gen", "py"))

import grpc  # noqa: E402
from grpc_status import rpc_status  # noqa: E402
from agora.token.v1 import token_service_pb2 as pb  # noqa: E402
from agora.token.v1 import token_service_pb2_grpc as pb_grpc  # noqa: E402

target, mode = sys.argv[1], sys.argv[2]
compression = grpc.Compression.Gzip if mode == "gzip" else grpc.Compression.NoCompression
name = f"grpcio-{mode}"

with grpc.insecure_channel(target, compression=compression) as channel:
    stub = pb_grpc.TokenServiceStub(channel)
    rtc = stub.BuildRtcToken(
        pb.BuildRtcTokenRequest(channel_name=f"matrix-{name}", uid=42, role=pb.ROLE_PUBLISHER)
    )
    rtm = stub.BuildRtmToken(pb.BuildRtmTokenRequest(user_id=f"user-{name}"))
    inspect = stub.InspectToken(pb.InspectTokenRequest(token=rtc.token))
    error = None
    try:
        stub.BuildRtcToken(pb.BuildRtcTokenRequest(channel_name="matrix", expire_seconds=0))
    except grpc.RpcError as e:
        # google.rpc.Status from grpc-status-details-bin (grpcio-status).
        status = rpc_status.from_call(e)
        error = {
            "code": e.code().name.lower(),
            "message": e.details(),
            "details": [d.type_url.rsplit("/", 1)[-1] for d in status.details] if status else [],
        }

print(
    "RESULT "
    + json.dumps(
        {
            "client": name,
            "channel": f"matrix-{name}",
            "rtmUser": f"user-{name}",
            "rtc": rtc.token,
            "rtm": rtm.token,
            "inspect": {
                "appId": inspect.app_id,
                "signature": pb.SignatureStatus.Name(inspect.signature).replace("SIGNATURE_STATUS_", ""),
            },
            "error": error,
        }
    )
)
