// A Node.js client of cardapd built from the protos alone (grpc-js + proto-loader at run
// time, no generated code), as an integrator's kiosk or gate UI would be; run by
// test_node_client.py. Usage: node node_client.js PROTO_DIR GATE_SOCKET OPS_SOCKET
// Prints one JSON object: the client's method names and each call's answer or error.
"use strict";
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [protoDir, gateSocket, opsSocket] = process.argv.slice(2);
const definition = protoLoader.loadSync("cardap/v1/terminal.proto", {
  includeDirs: [protoDir], longs: String, enums: String, bytes: String, defaults: true,
});
const Terminal = grpc.loadPackageDefinition(definition).cardap.v1.Terminal;
const gate = new Terminal(`unix:${gateSocket}`, grpc.credentials.createInsecure());
const ops = new Terminal(`unix:${opsSocket}`, grpc.credentials.createInsecure());

// One unary call: {ok: response} or {code, message}.
function call(client, method, request) {
  return new Promise((resolve) => {
    client[method](request, { deadline: Date.now() + 15000 }, (err, response) => {
      resolve(err ? { code: grpc.status[err.code], message: err.details } : { ok: response });
    });
  });
}

(async () => {
  const out = {
    // the camel-case name grpc-js gives each method (readUserId) -> the path it calls
    clientMethods: Object.fromEntries(Object.keys(Terminal.prototype)
      .filter((k) => /^[a-z]/.test(k)).map((k) => [k, Terminal.prototype[k].path])),
    readUserId: await call(gate, "readUserId", {}),
    ReadUserID: await call(gate, "ReadUserID", {}),  // v1.0.0 name: no camel-case alias
    listCardAps: await call(ops, "listCardAps", {}),
    ListCardAPs: await call(ops, "ListCardAPs", {}),
    listCardApsOnGate: await call(gate, "listCardAps", {}),
  };
  gate.close();
  ops.close();
  process.stdout.write(JSON.stringify(out) + "\n");
})();
