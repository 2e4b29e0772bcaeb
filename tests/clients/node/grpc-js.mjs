// @grpc/grpc-js against the service (gRPC over h2c, the repo's proto loaded
// at run time by @grpc/proto-loader): node grpc-js.mjs <host:port>
// Prints one line "RESULT <json>" for tests/client_matrix.rs to check.
import { fileURLToPath } from "node:url";
import path from "node:path";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

// google.rpc.Status, to read grpc-status-details-bin.
const Status = protobuf.Root.fromJSON({
  nested: {
    Any: { fields: { typeUrl: { type: "string", id: 1 }, value: { type: "bytes", id: 2 } } },
    Status: {
      fields: {
        code: { type: "int32", id: 1 },
        message: { type: "string", id: 2 },
        details: { rule: "repeated", type: "Any", id: 3 },
      },
    },
  },
}).lookupType("Status");

const [target] = process.argv.slice(2);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../proto");
const def = protoLoader.loadSync("agora/token/v1/token_service.proto", {
  includeDirs: [root],
  enums: String,
  defaults: true,
  oneofs: true,
});
const { TokenService } = grpc.loadPackageDefinition(def).agora.token.v1;
const client = new TokenService(target, grpc.credentials.createInsecure());
const call = (method, req) =>
  new Promise((resolve, reject) =>
    client[method](req, (err, resp) => (err ? reject(err) : resolve(resp))),
  );

const rtc = await call("BuildRtcToken", {
  channelName: "matrix-grpc-js",
  uid: 42,
  role: "ROLE_PUBLISHER",
});
const rtm = await call("BuildRtmToken", { userId: "user-grpc-js" });
const inspect = await call("InspectToken", { token: rtc.token });
let error = null;
try {
  await call("BuildRtcToken", { channelName: "matrix", expireSeconds: 0 });
} catch (e) {
  const name = Object.keys(grpc.status).find((k) => grpc.status[k] === e.code);
  error = {
    code: name.toLowerCase(),
    message: e.details,
    details: e.metadata
      .get("grpc-status-details-bin")
      .flatMap((bin) => Status.decode(bin).details.map((d) => d.typeUrl.split("/").pop())),
  };
}
client.close();
console.log(
  "RESULT " +
    JSON.stringify({
      client: "grpc-js",
      channel: "matrix-grpc-js",
      rtmUser: "user-grpc-js",
      rtc: rtc.token,
      rtm: rtm.token,
      inspect: { appId: inspect.appId, signature: inspect.signature.replace("SIGNATURE_STATUS_", "") },
      error,
    }),
);
