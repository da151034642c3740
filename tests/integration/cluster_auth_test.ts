/**
 * Server-to-server authentication with real processes: a server that does not hold the cluster
 * secret — even one that answers every hello as a real server would — never becomes a member,
 * never reaches a browser's server list and adds nothing to anyone's contacts; a captured signed
 * request cannot be replayed, nor redirected to another server; an oversized unsigned body is
 * refused without being buffered.
 */
import assert from "node:assert/strict";
import { ClusterKey, Hmac } from "../../server/cluster/mod.ts";
import { requestSigned } from "../../server/cluster/cluster_key.ts";
import { startCluster, startServer, TEST_SECRET, waitFor } from "../support/server_process.ts";
import { TestClient } from "../support/ws_client.ts";
import { waitForCorrectRing } from "../support/ring.ts";

const PASSWORD = "correct horse battery";

/** A fake "server" without the cluster secret that claims to be a member, and what it saw. */
function startImpostor() {
  const hellosFrom = new Map<string, number>();
  let self = "";
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    await req.body?.cancel();
    if (path === "/cluster/rpc") {
      const from = req.headers.get("x-p2p-from") ?? "?";
      hellosFrom.set(from, (hellosFrom.get(from) ?? 0) + 1);
      return Response.json({ v: 1, type: "hello", peers: [self] });
    }
    if (path === "/replication/rpc") {
      return Response.json({ v: 1, type: "directory", usernames: ["ghost"], online: [] });
    }
    return new Response("not found", { status: 404 });
  });
  self = `http://127.0.0.1:${server.addr.port}`;
  return { url: self, hellosFrom, stop: () => server.shutdown() };
}

Deno.test("a server without the cluster secret that answers like a member is never believed", async () => {
  const impostor = startImpostor();
  const servers = [await startServer({ peers: [impostor.url] })];
  const clients: TestClient[] = [];
  try {
    servers.push(await startServer({ peers: [servers[0]!.url, impostor.url] }));
    await waitForCorrectRing(servers, "the two real servers to form one ring");
    // Every real server keeps asking it (hello rounds) and refuses each answer.
    await waitFor(
      "both servers to have sent the impostor three hellos",
      () => servers.every((s) => (impostor.hellosFrom.get(s.url) ?? 0) >= 3),
    );
    await waitFor(
      "both servers to log that its answers are not authentic",
      () =>
        servers.every((s) =>
          s.logs().includes('"event":"peer_not_authenticated"') && s.logs().includes(impostor.url)
        ),
    );
    for (const s of servers) {
      const health = await (await fetch(`${s.url}/healthz`)).json() as { servers: string[] };
      assert.deepEqual(health.servers.includes(impostor.url), false, `${s.url} lists the impostor`);
      assert.equal(health.servers.length, 2);
    }
    const alice = await TestClient.connect(servers[0]!.url);
    clients.push(alice);
    const session = await alice.login("alice", PASSWORD);
    assert.equal(session.type, "session");
    if (session.type === "session") {
      assert.deepEqual([...session.servers].sort(), servers.map((s) => s.url).sort());
    }
    // The impostor's "ghost" is no user: not online, no keys.
    const contacts = await alice.request({ type: "watch", usernames: ["ghost"] });
    assert.deepEqual(contacts.type === "presence_list" && contacts.users, [
      { username: "ghost", online: false },
    ]);
    const keys = await alice.request({ type: "get_keys", username: "ghost" });
    assert.equal(keys.type === "error" && keys.code, "unknown_user", "a fake user");
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(servers.map((s) => s.stop()));
    await impostor.stop();
  }
});

/** Signed headers for `body` to `to` from `from`, with the given nonce (as a server makes them). */
async function signedHeaders(to: string, body: string, nonce: string, from: string) {
  const key = new ClusterKey(new Hmac(TEST_SECRET), from);
  const time = String(Date.now());
  const signature = await key.hmac.sign(requestSigned("POST", to, from, time, nonce, body));
  return {
    "content-type": "application/json",
    "x-p2p-from": from,
    "x-p2p-to": to,
    "x-p2p-time": time,
    "x-p2p-nonce": nonce,
    "x-p2p-signature": signature,
  };
}

Deno.test("a captured signed request is refused when replayed, and when sent to another server", async () => {
  const [a, b] = await startCluster(2);
  const bob = await TestClient.connect(a!.url);
  try {
    await bob.login("bob", PASSWORD);
    const deliver = (x: number) =>
      JSON.stringify({
        v: 1,
        type: "deliver",
        to: "bob",
        frame: { v: 1, type: "signal", from: "mallory", data: { x } },
      });
    const endpoint = `${a!.url}/cluster/rpc`;
    const captured = {
      body: deliver(1),
      headers: await signedHeaders(endpoint, deliver(1), "n-1", b!.url),
    };
    const first = await fetch(endpoint, { method: "POST", ...captured });
    assert.equal(first.status, 200, await first.text());
    const replay = await fetch(endpoint, { method: "POST", ...captured });
    const replayBody = await replay.json();
    assert.equal(replay.status, 401);
    assert.match(replayBody.message, /Replayed/);
    // The same request addressed to server b, sent to server a: refused, whatever its nonce.
    const other = await signedHeaders(`${b!.url}/cluster/rpc`, deliver(1), "n-2", b!.url);
    const misdirected = await fetch(endpoint, { method: "POST", body: deliver(1), headers: other });
    assert.equal(misdirected.status, 421);
    await misdirected.body?.cancel();
    // A fresh request goes through; bob saw the first one exactly once before it.
    const fresh = await fetch(endpoint, {
      method: "POST",
      body: deliver(2),
      headers: await signedHeaders(endpoint, deliver(2), "n-3", b!.url),
    });
    assert.equal(fresh.status, 200);
    await fresh.body?.cancel();
    await bob.next((f) => f.type === "signal" && (f.data as { x?: number }).x === 2);
    const ones = bob.frames.filter((f) =>
      f.type === "signal" && (f.data as { x?: number }).x === 1
    );
    assert.equal(ones.length, 1, "the replayed deliver reached bob");
    const metrics = await (await fetch(`${a!.url}/metrics`)).text();
    assert.match(metrics, /p2pchat_cluster_rejected_total\{endpoint="cluster",reason="replay"\} 1/);
  } finally {
    await bob.close();
    await Promise.all([a!.stop(), b!.stop()]);
  }
});

/** Resident memory of a process, in MiB. */
async function rssMiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

Deno.test("a 150 MiB unsigned body is refused without being buffered", async () => {
  const server = await startServer();
  try {
    const before = await rssMiB(server.pid);
    let sent = 0;
    const chunk = new Uint8Array(1024 * 1024).fill(0x61);
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 150) return controller.close();
        sent++;
        controller.enqueue(chunk);
      },
    });
    let status = 0;
    try {
      const res = await fetch(`${server.url}/cluster/rpc`, { method: "POST", body });
      status = res.status;
      await res.body?.cancel();
    } catch {
      status = -1; // the server may cut the upload short once it has refused it
    }
    assert.ok(status === 413 || status === -1, `status ${status}`);
    assert.ok(sent < 150, `the whole body was read (${sent} MiB)`);
    const after = await rssMiB(server.pid);
    console.log(
      `RSS ${before.toFixed(0)} → ${after.toFixed(0)} MiB after a 150 MiB body (${sent} MiB sent)`,
    );
    assert.ok(after - before < 64, `server grew by ${(after - before).toFixed(0)} MiB`);
    // And it still serves.
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
  } finally {
    await server.stop();
  }
});

Deno.test("with an operator token, /metrics and /ring answer only to it", async () => {
  const token = "operator-token-for-tests-0123";
  const server = await startServer({ env: { P2P_OPERATOR_TOKEN: token } });
  try {
    for (const path of ["/metrics", "/ring"]) {
      const open = await fetch(`${server.url}${path}`);
      assert.equal(open.status, 401, `${path} without the token`);
      assert.match(await open.text(), /for operators/);
      const withHeader = await fetch(`${server.url}${path}`, {
        headers: { "x-operator-token": token },
      });
      assert.equal(withHeader.status, 200, `${path} with the token`);
      await withHeader.body?.cancel();
      const wrong = await fetch(`${server.url}${path}?token=${token}x`);
      assert.equal(wrong.status, 401);
      await wrong.body?.cancel();
    }
    // Health stays open: load balancers and orchestrators probe it.
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
  } finally {
    await server.stop();
  }
});
