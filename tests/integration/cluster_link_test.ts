/**
 * Persistent links between real server processes (server/cluster/link.ts): the ring's traffic
 * goes over them, a server killed with -9 and restarted is linked again, and what a stranger
 * sends on a link it opened changes nothing.
 */
import assert from "node:assert/strict";
import { RawWebSocket } from "../support/raw_ws.ts";
import { waitForCorrectRing } from "../support/ring.ts";
import { startCluster, startServer, waitFor } from "../support/server_process.ts";
import { TestClient } from "../support/ws_client.ts";

const PASSWORD = "correct horse battery";

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) {
      sum += Number(line.split(" ").at(-1));
    }
  }
  return sum;
}

Deno.test("cluster links: servers call each other over links, and link again after a kill -9", async () => {
  const servers = await startCluster(3);
  const clients: TestClient[] = [];
  try {
    await waitForCorrectRing(servers, "the ring to form");
    for (const s of servers) {
      await waitFor(
        `${s.url} to call its peers over links`,
        async () =>
          await metric(s.url, "p2pchat_cluster_link_calls_total") > 0 &&
          await metric(s.url, "p2pchat_cluster_links_accepted_total") > 0,
        30_000,
      );
    }
    // An offline message is stored with copies on every server (K = 2 of 3): replication
    // requests travel over links, and the sender gets its acknowledgement.
    const alice = await TestClient.connect(servers[0]!.url);
    clients.push(alice);
    const bob = await TestClient.connect(servers[1]!.url);
    clients.push(bob);
    await bob.register("bob", PASSWORD);
    await alice.login("alice", PASSWORD);
    const sent = await alice.request({
      type: "mail_send",
      to: "bob",
      messages: [{ id: "message-0001", sentAt: Date.now(), envelope: "sealed" }],
    });
    assert.equal(sent.type, "ok", JSON.stringify(sent));

    // kill -9 of one server; restarted from its disk on the same address, it is called again
    // (over a new link: the old one ended with the process).
    const victim = servers[2]!;
    await victim.stop("SIGKILL");
    const port = Number(new URL(victim.url).port);
    servers[2] = await startServer({
      dataDir: victim.dataDir,
      port,
      peers: [servers[0]!.url],
    });
    await waitForCorrectRing(servers, "the ring to re-form after the restart");
    await waitFor(
      "the restarted server to be linked from its peers",
      async () => await metric(servers[2]!.url, "p2pchat_cluster_links_accepted_total") >= 2,
      30_000,
    );
    const again = await alice.request({
      type: "mail_send",
      to: "bob",
      messages: [{ id: "message-0002", sentAt: Date.now(), envelope: "sealed" }],
    });
    assert.equal(again.type, "ok", JSON.stringify(again));
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await Promise.all(servers.map((s) => s.stop()));
  }
});

Deno.test("cluster links: a browser page cannot open one; a stranger's frames are refused and change nothing", async () => {
  const [server] = await startCluster(1);
  try {
    // A page of any site could open a WebSocket: a request with an Origin gets no link.
    await assert.rejects(
      RawWebSocket.connect(server!.url, "/cluster/link", ["Origin: https://evil.example"]),
      /Handshake refused: HTTP\/1\.1 403/,
    );
    // A request without the cluster secret: a typed refusal, not an answer.
    const link = await RawWebSocket.connect(server!.url, "/cluster/link");
    const headers = {
      "x-p2p-from": "http://127.0.0.1:1",
      "x-p2p-to": `${server!.url}/replication/rpc`,
      "x-p2p-time": String(Date.now()),
      "x-p2p-nonce": "n-1",
      "x-p2p-signature": "forged",
    };
    await link.sendText(
      `${JSON.stringify({ id: 7, path: "/replication/rpc", headers })}\n` +
        JSON.stringify({ v: 1, type: "push", entries: [], tombstones: [], accounts: [] }),
    );
    const answer = await link.next((e) => e.type === "message");
    assert.equal(answer.type, "message");
    const text = String((answer as { data: string }).data);
    const [head, body] = [text.slice(0, text.indexOf("\n")), text.slice(text.indexOf("\n") + 1)];
    assert.equal(JSON.parse(head).id, 7);
    assert.equal(JSON.parse(head).status, 401);
    assert.equal(JSON.parse(body).code, "not_authenticated");
    // Not a link request at all: the link is closed with a policy violation, and logged.
    await link.sendText("hello");
    const closed = await link.next((e) => e.type === "close");
    assert.equal((closed as { code?: number }).code, 1008);
    await waitFor(
      "the server to log the invalid link frame",
      () => server!.logs().includes('"event":"cluster_link_invalid"'),
      10_000,
    );
    // A header no HTTP request may carry (it would throw where the request is built): the link
    // is closed, the server lives on.
    const second = await RawWebSocket.connect(server!.url, "/cluster/link");
    await second.sendText(
      `${JSON.stringify({ id: 1, path: "/cluster/rpc", headers: { "x-p2p-from": "a\nb" } })}\n{}`,
    );
    assert.equal(((await second.next((e) => e.type === "close")) as { code?: number }).code, 1008);
    // The server goes on serving.
    assert.equal((await fetch(`${server!.url}/healthz`)).status, 200);
    assert.equal(await metric(server!.url, "p2pchat_mailbox_entries"), 0);
  } finally {
    await server!.stop();
  }
});
