"""connect-python against the service, with its defaults (Connect protocol,
binary protobuf, gzip requests and responses):
python connect_client.py <base-url>

Stubs generated from the repo's proto by grpcio-tools and
protoc-gen-connect-python (tests/clients/setup.sh, into tests/clients/gen/py).
Prints one line "RESULT <json>" for tests/client_matrix.rs to check.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "gen", "py"))

from connectrpc.errors import ConnectError  # noqa: E402
from agora.token.v1 import token_service_pb2 as pb  # noqa: E402
from agora.token.v1.token_service_connect import TokenServiceClientSync  # noqa: E402

base_url = sys.argv[1]
name = "connect-python"

with TokenServiceClientSync(base_url) as client:
    rtc = client.build_rtc_token(
        pb.BuildRtcTokenRequest(channel_name=f"matrix-{name}", uid=42, role=pb.ROLE_PUBLISHER)
    )
    rtm = client.build_rtm_token(pb.BuildRtmTokenRequest(user_id=f"user-{name}"))
    inspect = client.inspect_token(pb.InspectTokenRequest(token=rtc.token))
    error = None
    try:
        client.build_rtc_token(pb.BuildRtcTokenRequest(channel_name="matrix", expire_seconds=0))
    except ConnectError as e:
        error = {
            "code": e.code.value,
            "message": e.message,
            "details": [d.type_url.rsplit("/", 1)[-1] for d in e.details],
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
