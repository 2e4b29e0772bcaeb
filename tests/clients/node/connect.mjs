// connect-node against the service: node connect.mjs <base-url> <mode>
// mode: json (Connect, JSON, HTTP/1.1), binary (Connect, application/proto),
// gzip (Connect, JSON, gzip both ways), grpc (gRPC over h2c),
// grpcweb (gRPC-Web, HTTP/1.1).
// Prints one line "RESULT <json>" for tests/client_matrix.rs to check
// (tokens decoded and verified there with the app certificate).
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { Role, TokenService } from "../gen/es/agora/token/v1/token_service_pb.js";
import { SignatureStatus } from "../gen/es/agora/token/v1/token_service_pb.js";

const [baseUrl, mode] = process.argv.slice(2);
const transports = {
  // connect-es 2 defaults to the binary format: JSON is asked for.
  json: () => createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
  binary: () => createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true }),
  gzip: () =>
    createConnectTransport({
      baseUrl,
      httpVersion: "1.1",
      useBinaryFormat: false,
      sendCompression: compressionGzip,
      acceptCompression: [compressionGzip],
      compressMinBytes: 0,
    }),
  grpc: () => createGrpcTransport({ baseUrl, httpVersion: "2" }),
  grpcweb: () => createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
};
if (!transports[mode]) throw new Error(`unknown mode ${mode}`);
const client = createClient(TokenService, transports[mode]());
const name = `connect-node-${mode}`;

const rtc = await client.buildRtcToken({
  channelName: `matrix-${mode}`,
  user: { case: "uid", value: 42 },
  role: Role.PUBLISHER,
});
const rtm = await client.buildRtmToken({ userId: `user-${mode}` });
const inspect = await client.inspectToken({ token: rtc.token });
let error = null;
try {
  await client.buildRtcToken({ channelName: "matrix", expireSeconds: 0 });
} catch (e) {
  const err = ConnectError.from(e);
  error = {
    // Code names as the Connect protocol spells them.
    code: Code[err.code].replace(/[A-Z]/g, (c, i) => (i ? "_" : "") + c.toLowerCase()),
    message: err.rawMessage,
    details: err.details.map((d) => ("desc" in d ? d.desc.typeName : d.type)),
  };
}
console.log(
  "RESULT " +
    JSON.stringify({
      client: name,
      channel: `matrix-${mode}`,
      rtmUser: `user-${mode}`,
      rtc: rtc.token,
      rtm: rtm.token,
      inspect: {
        appId: inspect.appId,
        signature: SignatureStatus[inspect.signature],
      },
      error,
    }),
);
