// A Workload API caller written with npm's `@grpc/grpc-js` (pure JavaScript gRPC, which
// sends `localhost` as the `:authority` of a `unix:` target) and `@grpc/proto-loader`,
// for tests/agent_clients.rs. It loads the agent's own workload.proto, makes one
// FetchX509SVID call and prints one JSON object: the first response's SPIFFE ID, chain
// and bundle (base64 DER, for the Rust test to verify), or the gRPC status name and code
// it got, then exits non-zero.
//
// usage: NODE_PATH=MODULES node grpc_js.js WORKLOAD_PROTO SOCKET_PATH

"use strict";

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [protoPath, socketPath] = process.argv.slice(2);
// Liveness: a hung client fails the test instead of stalling it.
setTimeout(() => {
  console.error("no answer within 60 s");
  process.exit(2);
}, 60000).unref();

const definition = protoLoader.loadSync(protoPath, { keepCase: true, defaults: true });
const { SpiffeWorkloadAPI } = grpc.loadPackageDefinition(definition);
const client = new SpiffeWorkloadAPI("unix://" + socketPath, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
metadata.set("workload.spiffe.io", "true");

const call = client.FetchX509SVID({}, metadata, { deadline: Date.now() + 20000 });
let answered = false;
call.on("data", (response) => {
  answered = true;
  const svid = response.svids[0];
  console.log(
    JSON.stringify({
      status: "OK",
      spiffe_id: svid.spiffe_id,
      x509_svid: svid.x509_svid.toString("base64"),
      bundle: svid.bundle.toString("base64"),
    })
  );
  call.cancel();
  client.close();
});
call.on("error", (error) => {
  if (answered) return; // the cancel above
  console.log(JSON.stringify({ status: grpc.status[error.code], code: error.code, details: error.details }));
  client.close();
  process.exitCode = 1;
});
