import { ChordTransportError, IdSpace } from "../chord/mod.ts";
import { registerTransportConformanceTests } from "../chord/testing.ts";
import { Metrics } from "../telemetry/mod.ts";
import { HttpChordTransport, RING_RPC_PATH } from "./chord_transport.ts";
import { Hmac } from "./hmac.ts";
import { ClusterKey } from "./cluster_key.ts";

const SECRET = "conformance-secret-0123456789";

/** One HTTP transport behind a real `Deno.serve` on a loopback port. */
function startEndpoint(space: IdSpace) {
  const route: { transport?: HttpChordTransport } = {};
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (req) =>
      new URL(req.url).pathname === RING_RPC_PATH && route.transport
        ? route.transport.handleHttp(req)
        : new Response("not found", { status: 404 }),
  );
  const self = `http://127.0.0.1:${server.addr.port}`;
  const transport = new HttpChordTransport(
    { key: new ClusterKey(new Hmac(SECRET), self), space, counters: new Metrics() },
    { self, timeoutMs: 1000, retries: 0 },
  );
  route.transport = transport;
  return { transport, server };
}

registerTransportConformanceTests("HttpChordTransport", () => {
  const space = new IdSpace(16);
  const a = startEndpoint(space);
  const b = startEndpoint(space);
  // A port that was just free: nothing listens there.
  const probe = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const unused = `http://127.0.0.1:${(probe.addr as Deno.NetAddr).port}`;
  probe.close();
  return Promise.resolve({
    space,
    a: a.transport,
    b: b.transport,
    unusedAddress: unused,
    run: (p) => p,
    dispose: async () => {
      await a.server.shutdown();
      await b.server.shutdown();
    },
  });
});

Deno.test("HttpChordTransport: a caller without the cluster secret is refused before its request is read", async () => {
  const space = new IdSpace(16);
  const b = startEndpoint(space);
  const intruder = new HttpChordTransport(
    {
      key: new ClusterKey(new Hmac("some-other-secret-entirely"), "http://127.0.0.1:9"),
      space,
      counters: new Metrics(),
    },
    { self: "http://127.0.0.1:9", timeoutMs: 1000, retries: 0 },
  );
  let calls = 0;
  b.transport.listen(() => {
    calls++;
    return Promise.resolve({ v: 1, type: "ack" });
  });
  try {
    let refused: unknown;
    try {
      await intruder.call(b.transport.localAddress, { v: 1, type: "ping" });
    } catch (err) {
      refused = err;
    }
    if (!(refused instanceof ChordTransportError)) throw new Error(`not refused: ${refused}`);
    if (calls !== 0) throw new Error("the handler saw the intruder's request");
  } finally {
    await b.server.shutdown();
  }
});
