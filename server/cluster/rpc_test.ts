import assert from "node:assert/strict";
import { Metrics, silentLog } from "../telemetry/mod.ts";
import { ClusterKey } from "./cluster_key.ts";
import { Hmac } from "./hmac.ts";
import { serveSigned, signedPost } from "./rpc.ts";

const SECRET = "a-test-cluster-secret-of-some-length";

Deno.test("signed RPC: a verified request tells the server who was heard from, a signed answer tells the caller; forgeries tell nobody", async () => {
  const hmac = new Hmac(SECRET);
  const heardByServer: string[] = [];
  const heardByCaller: string[] = [];
  let serverKey: ClusterKey | undefined;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) =>
      serveSigned(req, {
        name: "test",
        maxBodyBytes: 1024,
        parse: (text) => JSON.parse(text) as unknown,
        handle: () => ({ ok: true }),
      }, { key: serverKey!, metrics: new Metrics(), log: silentLog }),
  );
  try {
    const address = `http://127.0.0.1:${server.addr.port}`;
    serverKey = new ClusterKey(hmac, address);
    serverKey.onPeerHeard((a) => heardByServer.push(a));
    const caller = new ClusterKey(hmac, "http://127.0.0.1:1");
    const unsubscribe = caller.onPeerHeard((a) => heardByCaller.push(a));
    const answer = await signedPost(caller, `${address}/test/rpc`, "{}", 5000);
    assert.equal(answer.status, 200);
    assert.deepEqual(heardByServer, ["http://127.0.0.1:1"]);
    assert.deepEqual(heardByCaller, [address], "the endpoint's path is not part of the address");
    // A caller with another secret: refused, and neither side counts it as a sign of life.
    const stranger = new ClusterKey(new Hmac("another-secret-of-some-length!!"), "http://x:1");
    stranger.onPeerHeard((a) => heardByCaller.push(`stranger heard ${a}`));
    await assert.rejects(signedPost(stranger, `${address}/test/rpc`, "{}", 5000));
    assert.deepEqual(heardByServer, ["http://127.0.0.1:1"]);
    assert.deepEqual(heardByCaller, [address]);
    unsubscribe();
    await signedPost(caller, `${address}/test/rpc`, "{}", 5000);
    assert.deepEqual(heardByCaller, [address], "unsubscribed");
  } finally {
    await server.shutdown();
  }
});
