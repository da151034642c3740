/**
 * A server restarted from its own disk on another port catches up with the servers that answer
 * and gets back to work (issue #16), with real server processes and their SQLite files (3
 * servers, K = 2, W = 2): its earlier address is itself, not a server that might hold newer
 * data, so it is not waited for. The longest catch-up is set far beyond the test's deadlines:
 * a server that waited for its own old address would not repair its copies in time.
 */
import assert from "node:assert/strict";
import { mailboxCopies, waitForCorrectRing } from "../support/ring.ts";
import {
  type ServerProcess,
  startCluster,
  startServer,
  waitFor,
} from "../support/server_process.ts";
import { TestClient } from "../support/ws_client.ts";

const PASSWORD = "correct horse battery";
const K = 2;
const CATCH_UP_MAX_WAIT_MS = 600_000;

Deno.test("a server restarted from its disk on a new port catches up without waiting for its old address", async () => {
  const env = {
    P2P_REGISTRATIONS_PER_MINUTE: "1000",
    P2P_CATCH_UP_MAX_WAIT_MS: String(CATCH_UP_MAX_WAIT_MS),
  };
  const servers = await startCluster(3, { env });
  const clients: TestClient[] = [];
  let restarted: ServerProcess | undefined;
  try {
    const alice = await TestClient.connect(servers[0]!.url);
    clients.push(alice);
    for (const u of ["carol", "dave"]) await alice.register(u, PASSWORD, 60_000);
    await alice.login("alice", PASSWORD, true);
    // Every server holds a pending message (K = 2 on 3 servers): the victim restarts with mail
    // on its disk, so it catches up before its copies count.
    const early = await alice.request({
      type: "mail_send",
      to: "carol",
      messages: [{ id: "before-the-crash", sentAt: Date.now(), envelope: "x" }],
    }, 60_000);
    assert.equal(early.type, "ok", JSON.stringify(early));
    await waitFor(
      "carol's message on all 3 servers",
      () => mailboxCopies(servers).get("carol/before-the-crash") === 3,
      60_000,
      100,
    );

    const victim = servers[2]!;
    await victim.stop("SIGKILL");
    const ids = Array.from({ length: 20 }, (_, i) => `while-down-${i}`);
    const sent = await alice.request({
      type: "mail_send",
      to: "dave",
      messages: ids.map((id) => ({ id, sentAt: Date.now(), envelope: "x" })),
    }, 60_000);
    assert.equal(sent.type, "ok", JSON.stringify(sent));

    // Back from its own disk on a new port (port 0: the system picks one).
    restarted = await startServer({ env, dataDir: victim.dataDir, peers: [servers[0]!.url] });
    assert.notEqual(restarted.url, victim.url);
    const ring = [servers[0]!, servers[1]!, restarted];
    await waitForCorrectRing(ring, "the restarted server to join the ring");
    // Its copies are repaired (no anti-entropy with a copy still catching up) ...
    await waitFor(
      "K + 1 copies of every message stored while it was down",
      () => {
        const copies = mailboxCopies(ring);
        return ids.every((id) => (copies.get(`dave/${id}`) ?? 0) >= K + 1);
      },
      90_000,
      200,
    );
    // ... and it says it waited for no one: its old address is itself.
    const caughtUp = restarted.logs().split("\n").find((l) => l.includes('"caught_up"'));
    assert.ok(caughtUp, "the restarted server logged caught_up");
    const line = JSON.parse(caughtUp);
    assert.equal(line.absent, undefined, caughtUp);
    assert.deepEqual(line.formerAddresses, [victim.url], caughtUp);

    // dave reads everything from the restarted server.
    const dave = await TestClient.connect(restarted.url);
    clients.push(dave);
    await dave.login("dave", PASSWORD, false);
    const page = await dave.request({ type: "mail_fetch" }, 60_000);
    assert.equal(page.type, "mail", JSON.stringify(page));
    assert.deepEqual(page.type === "mail" && page.messages.map((m) => m.id).sort(), ids.sort());
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([...servers, ...(restarted ? [restarted] : [])].map((s) => s.stop()));
  }
});
