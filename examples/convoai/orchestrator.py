#!/usr/bin/env python3
"""A ConvoAI orchestrator that never lets its agent's token expire.

It opens one `WatchToken{agent_session}` stream on token-authority and:
  * sends the first session to ConvoAI's `POST {base}/join` (the agent's
    token in `properties.token`, the REST token in `Authorization: agora
    token=...`);
  * sends every later session's agent token to
    `POST {base}/agents/{agent_id}/update` (`properties.token`).

It follows the stream's reconnect contract (docs/WATCH.md): a stream that
ends with OK is reopened at once; UNAVAILABLE, RESOURCE_EXHAUSTED or a lost
connection are retried with backoff (the last token stays valid until its
expires_at, and a new stream starts with a fresh token, which goes to
/update); UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT and
NOT_FOUND stop it.

Needs `pip install grpcio grpcio-tools`. The Python stubs are generated
from proto/ at start-up (into a temporary directory), so nothing generated
is kept in the repository.

    TOKEN_AUTHORITY_API_KEY=... python3 examples/convoai/orchestrator.py \\
        --server 127.0.0.1:8080 \\
        --convoai-url https://api.agora.io/api/conversational-ai-agent/v2/projects/$APP_ID \\
        --channel convo-1 --agent-uid 1001 --user-uid 2002

Tested by tests/convoai_example.rs against a local stand-in of the ConvoAI
REST API (`--updates N` stops after N updates, for that test).
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto")
PROTO = "agora/token/v1/token_service.proto"


def load_stubs():
    """Compiles the service's proto into Python modules and imports them."""
    from grpc_tools import protoc  # noqa: PLC0415 (needs grpcio-tools)
    import importlib.resources

    out = tempfile.mkdtemp(prefix="ta-stubs-")
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}",
                      f"--python_out={out}", f"--grpc_python_out={out}", PROTO])
    if rc != 0:
        sys.exit(f"protoc failed ({rc}) on {PROTO}")
    sys.path.insert(0, out)
    from agora.token.v1 import token_service_pb2 as pb  # noqa: PLC0415
    from agora.token.v1 import token_service_pb2_grpc as rpc  # noqa: PLC0415
    return pb, rpc


def post(url, body, rest_token):
    """POSTs JSON with ConvoAI's token authorization; returns the JSON answer."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": f"agora token={rest_token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
        return json.loads(text) if text else {}


class Orchestrator:
    def __init__(self, args, pb, rpc):
        self.args, self.pb, self.rpc = args, pb, rpc
        self.agent_id = None
        self.updates = 0

    def request(self):
        a = self.args
        return self.pb.WatchTokenRequest(agent_session=self.pb.BuildAgentSessionRequest(
            channel_name=a.channel, agent_uid=a.agent_uid, user_uid=a.user_uid,
            enable_rtm=a.enable_rtm))

    def deliver(self, s):
        """One delivery: join with the first session, update with the others."""
        a = self.args
        if self.agent_id is None:
            body = {"name": a.name, "properties": {
                "channel": a.channel, "token": s.agent_token,
                "agent_rtc_uid": a.agent_uid, "remote_rtc_uids": [a.user_uid],
                "enable_string_uid": False}}
            answer = post(f"{a.convoai_url}/join", body, s.rest_token)
            self.agent_id = answer["agent_id"]
            print(f"joined: agent {self.agent_id}, token expires at {s.expires_at}", flush=True)
        else:
            post(f"{a.convoai_url}/agents/{self.agent_id}/update",
                 {"properties": {"token": s.agent_token}}, s.rest_token)
            self.updates += 1
            print(f"updated: agent {self.agent_id}, token expires at {s.expires_at}", flush=True)

    def run(self):
        import grpc  # noqa: PLC0415

        stop = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
        key = os.environ.get("TOKEN_AUTHORITY_API_KEY", "").strip()
        metadata = [("authorization", f"Bearer {key}")] if key else []
        backoff = 1.0
        while True:
            delivered = False
            try:
                with grpc.insecure_channel(self.args.server, options=[
                        ("grpc.keepalive_time_ms", 30_000),
                        ("grpc.keepalive_timeout_ms", 20_000)]) as channel:
                    stub = self.rpc.TokenServiceStub(channel)
                    for m in stub.WatchToken(self.request(), metadata=metadata):
                        self.deliver(m.agent_session)
                        delivered = True
                        backoff = 1.0
                        if self.args.updates is not None and self.updates >= self.args.updates:
                            return 0
                # Ended with OK (the server's max_watch_seconds): reconnect at once.
                if delivered:
                    continue
            except grpc.RpcError as e:
                if e.code() in stop:
                    print(f"stopping: {e.code().name}: {e.details()}", file=sys.stderr)
                    return 1
                print(f"stream ended: {e.code().name}: {e.details()}", file=sys.stderr)
            wait = backoff * (1 + random.random() / 4)
            print(f"reconnecting in {wait:.1f} s", file=sys.stderr, flush=True)
            time.sleep(wait)
            backoff = min(backoff * 2, 30.0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", default="127.0.0.1:8080", help="token-authority HOST:PORT (gRPC)")
    p.add_argument("--convoai-url", required=True,
                   help="ConvoAI base URL, .../conversational-ai-agent/v2/projects/APP_ID")
    p.add_argument("--channel", required=True)
    p.add_argument("--agent-uid", required=True)
    p.add_argument("--user-uid", required=True)
    p.add_argument("--name", default="agent-1", help="the agent's name at /join")
    p.add_argument("--enable-rtm", action="store_true")
    p.add_argument("--updates", type=int, help="stop after this many updates (tests)")
    args = p.parse_args()
    pb, rpc = load_stubs()
    sys.exit(Orchestrator(args, pb, rpc).run())


if __name__ == "__main__":
    main()
