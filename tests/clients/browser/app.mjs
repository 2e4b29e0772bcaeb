// The page's script (bundled by esbuild in setup.sh): from its own origin it
// calls the service (another origin, CORS) with connect-web (Connect JSON),
// gRPC-Web, and a plain fetch of GET /api/agora/token. The service's
// address and the cases to run come from the page's query string
// (?api=http://127.0.0.1:PORT&cases=fetch,connect,grpcweb). The outcome goes
// to <pre id="out"> as "RESULT <json>" for the driver (run.mjs).
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { Role, SignatureStatus, TokenService } from "../gen/es/agora/token/v1/token_service_pb.js";

const params = new URLSearchParams(location.search);
const api = params.get("api");
const cases = (params.get("cases") || "").split(",").filter(Boolean);

const codeName = (c) => Code[c].replace(/[A-Z]/g, (ch, i) => (i ? "_" : "") + ch.toLowerCase());

async function rpcCase(name, transport) {
  const client = createClient(TokenService, transport);
  const rtc = await client.buildRtcToken({
    channelName: `matrix-${name}`,
    user: { case: "uid", value: 42 },
    role: Role.PUBLISHER,
  });
  const rtm = await client.buildRtmToken({ userId: `user-${name}` });
  const inspect = await client.inspectToken({ token: rtc.token });
  let error = null;
  try {
    await client.buildRtcToken({ channelName: "matrix", expireSeconds: 0 });
  } catch (e) {
    const err = ConnectError.from(e);
    error = {
      code: codeName(err.code),
      message: err.rawMessage,
      details: err.details.map((d) => ("desc" in d ? d.desc.typeName : d.type)),
    };
  }
  return {
    client: name,
    channel: `matrix-${name}`,
    rtmUser: `user-${name}`,
    rtc: rtc.token,
    rtm: rtm.token,
    inspect: { appId: inspect.appId, signature: SignatureStatus[inspect.signature] },
    error,
  };
}

// --- snippet: fetch (docs/CLIENTS.md) ---
async function getToken(api, channelName, uid) {
  const q = new URLSearchParams({ channelName, uid: String(uid) });
  const r = await fetch(`${api}/api/agora/token?${q}`);
  const body = (await r.text()).trim();
  if (!r.ok) throw Object.assign(new Error(body), { status: r.status });
  return body; // the token
}
// --- end snippet ---

async function fetchCase() {
  const rtc = await getToken(api, "matrix-browser-fetch", 42);
  let error = null;
  try {
    await getToken(api, "matrix", "not-a-uid!");
  } catch (e) {
    error = { status: e.status, message: e.message };
  }
  return { client: "browser-fetch", channel: "matrix-browser-fetch", rtc, error };
}

// --- snippet: connect-web (docs/CLIENTS.md) ---
// The page's origin must be one of the service's [cors] allowed_origins.
const connectWeb = createConnectTransport({ baseUrl: api, useBinaryFormat: false });
const grpcWeb = createGrpcWebTransport({ baseUrl: api });
// const client = createClient(TokenService, connectWeb); // or grpcWeb
// const { token } = await client.buildRtcToken({ channelName, user: { case: "uid", value: 42 } });
// --- end snippet ---

const runners = {
  fetch: fetchCase,
  connect: () => rpcCase("browser-connect-web", connectWeb),
  grpcweb: () => rpcCase("browser-grpc-web", grpcWeb),
};

(async () => {
  const results = [];
  for (const c of cases) results.push(await runners[c]());
  document.getElementById("out").textContent = "RESULT " + JSON.stringify(results);
})().catch((e) => {
  document.getElementById("out").textContent = "ERROR " + (e && e.stack ? e.stack : e);
});
