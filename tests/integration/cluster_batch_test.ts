/**
 * Batched cluster calls with real processes: a server answers a signed `deliver_batch` with one
 * result per frame (and hands each taken frame to its user), and takes every notice of a signed
 * `presence_batch` (its watchers hear each change).
 */
import assert from "node:assert/strict";
import { ClusterKey, Hmac } from "../../server/cluster/mod.ts";
import { requestSigned } from "../../server/cluster/cluster_key.ts";
import { startCluster, TEST_SECRET } from "../support/server_process.ts";
import { TestClient } from "../support/ws_client.ts";

const PASSWORD = "correct horse battery";

/** POSTs `request` to `to`'s cluster endpoint signed as server `from`; the parsed answer. */
async function clusterCall(to: string, from: string, request: unknown): Promise<unknown> {
  const endpoint = `${to}/cluster/rpc`;
  const body = JSON.stringify(request);
  const key = new ClusterKey(new Hmac(TEST_SECRET), from);
  const time = String(Date.now());
  const nonce = crypto.randomUUID();
  const res = await fetch(endpoint, {
    method: "POST",
    body,
    headers: {
      "content-type": "application/json",
      "x-p2p-from": from,
      "x-p2p-to": endpoint,
      "x-p2p-time": time,
      "x-p2p-nonce": nonce,
      "x-p2p-signature": await key.hmac.sign(
        requestSigned("POST", endpoint, from, time, nonce, body),
      ),
    },
  });
  assert.equal(res.status, 200);
  return await res.json();
}

Deno.test("a batch of deliveries gets one answer per frame; a batch of presence notices reaches the watchers", async () => {
  const [a, b] = await startCluster(2);
  const clients: TestClient[] = [];
  try {
    const bob = await TestClient.connect(a!.url);
    const carol = await TestClient.connect(a!.url);
    clients.push(bob, carol);
    await bob.login("bob", PASSWORD);
    await carol.login("carol", PASSWORD);
    const signal = (x: number) => ({ v: 1, type: "signal", from: "mallory", data: { x } });
    const answer = await clusterCall(a!.url, b!.url, {
      v: 1,
      type: "deliver_batch",
      items: [
        { to: "bob", frame: signal(1) },
        { to: "nobody", frame: signal(2) },
        { to: "bob", frame: signal(3) },
      ],
    });
    assert.deepEqual(answer, { v: 1, type: "deliver_results", delivered: [true, false, true] });
    for (const x of [1, 3]) {
      await bob.next((f) => f.type === "signal" && (f.data as { x?: number }).x === x);
    }

    const watch = await carol.request({ type: "watch", usernames: ["dave", "erin"] });
    assert.equal(watch.type, "presence_list");
    const notice = (username: string) => ({
      username,
      home: b!.url,
      online: true,
      updatedAt: Date.now(),
    });
    assert.deepEqual(
      await clusterCall(a!.url, b!.url, {
        v: 1,
        type: "presence_batch",
        notices: [notice("dave"), notice("erin")],
      }),
      { v: 1, type: "ok" },
    );
    for (const name of ["dave", "erin"]) {
      await carol.next((f) => f.type === "presence" && f.username === name && f.online);
    }
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([a, b].map((s) => s!.stop()));
  }
});
