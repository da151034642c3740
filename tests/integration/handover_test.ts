/**
 * The hand-over grace against real server processes: a superseded connection stays open for a
 * bounded time in which it may only exchange signals with the user's new session — on the same
 * server and across servers — and nothing else (no signals or relays to other users, no mail, no
 * contacts, no presence); a third login ends the older grace; browsers cannot forge the servers'
 * reserved markers; the connection is closed when the grace ends or when it falls silent.
 */
import assert from "node:assert/strict";
import { type ServerProcess, startCluster, waitFor } from "../support/server_process.ts";
import { TestClient } from "../support/ws_client.ts";
import type { ServerFrame } from "../../shared/mod.ts";

/**
 * The hand-over grace the servers are started with (`P2P_HANDOVER_GRACE_SECONDS`), in ms: longer
 * than the 15 s silence timeout plus the servers' 5 s sweep interval, so that a silent grace
 * connection is always closed for its silence before its grace ends, even on a busy machine.
 */
const GRACE_MS = 25_000;
const GRACE_ENV = { P2P_HANDOVER_GRACE_SECONDS: String(GRACE_MS / 1000) };

function errorOf(frame: ServerFrame): { code: string; message: string } {
  assert.equal(frame.type, "error", `expected an error, got ${JSON.stringify(frame)}`);
  return frame as { code: string; message: string };
}

/** The data of the next signal `client` receives from `from`. */
async function signalFrom(client: TestClient, from: string): Promise<Record<string, unknown>> {
  const f = await client.next((f) => f.type === "signal" && f.from === from);
  assert.ok(f.type === "signal");
  return f.data;
}

/** Whether `client` still gets answers (its socket is open). */
async function isOpen(client: TestClient): Promise<boolean> {
  if (client.isClosed) return false;
  try {
    return (await client.request({ type: "ping" })).type === "pong";
  } catch {
    return false;
  }
}

/** The `handover_ended` log lines of `server`, as objects. */
function handoverEnds(server: ServerProcess): Array<{ username?: string; reason?: string }> {
  return server.logs().split("\n").filter((l) => l.includes('"handover_ended"')).map((l) =>
    JSON.parse(l)
  );
}

Deno.test("handover: the superseded connection signals only the new session, here and across servers, until the grace ends", async () => {
  const servers = await startCluster(2, { env: GRACE_ENV });
  const [s1, s2] = servers as [ServerProcess, ServerProcess];
  const clients: TestClient[] = [];
  const heartbeats: Array<ReturnType<typeof setInterval>> = [];
  const connect = async (s: ServerProcess) => {
    const c = await TestClient.connect(s.url);
    clients.push(c);
    return c;
  };
  try {
    const bob = await connect(s1);
    await bob.login("bob", "bob-secret-12");
    assert.equal(
      (await bob.request({ type: "watch", usernames: ["alice"] })).type,
      "presence_list",
    );
    const oldAlice = await connect(s1);
    const oldSession = await oldAlice.login("alice", "alice-secret-1");
    assert.equal(
      (await oldAlice.request({ type: "watch", usernames: ["bob"] })).type,
      "presence_list",
    );
    await bob.next((f) => f.type === "presence" && f.username === "alice" && f.online);

    // A second device on the same server: the first one enters its grace (its watch list goes).
    const newAlice = await connect(s1);
    await newAlice.login("alice", "alice-secret-1", false);
    assert.equal(
      (await newAlice.request({ type: "watch", usernames: ["bob"] })).type,
      "presence_list",
    );
    const told = await oldAlice.next((f) => f.type === "superseded");
    assert.deepEqual(told, {
      v: 1,
      type: "superseded",
      message: "Signed in elsewhere: this session was replaced by a newer login",
      handoverMs: GRACE_MS,
    });
    const health = await (await fetch(`${s1.url}/healthz`)).json();
    assert.equal(health.sessions, 2, "bob and the new alice; the grace connection is no session");

    // Self-signals pass both ways between the grace connection and the new session.
    oldAlice.send({ type: "signal", to: "alice", data: { type: "offer", sdp: "old", lid: "1" } });
    assert.deepEqual(await signalFrom(newAlice, "alice"), { type: "offer", sdp: "old", lid: "1" });
    newAlice.send({ type: "signal", to: "alice", data: { type: "answer", sdp: "new", lid: "1" } });
    assert.deepEqual(await signalFrom(oldAlice, "alice"), {
      type: "answer",
      sdp: "new",
      lid: "1",
    });

    // Nothing else: no signal or relay to others, no mail, no watch list, no login.
    oldAlice.send({ type: "signal", to: "bob", data: { type: "offer", sdp: "x" } });
    const refused = errorOf(await oldAlice.next((f) => f.type === "error"));
    assert.equal(refused.code, "not_authenticated");
    assert.match(refused.message, /only hand your history to your new device/);
    oldAlice.send({ type: "relay", to: "bob", payload: "hello" });
    assert.equal(errorOf(await oldAlice.next((f) => f.type === "error")).code, "not_authenticated");
    for (const frame of [{ type: "mail_fetch" }, { type: "watch", usernames: ["bob"] }]) {
      const code = errorOf(await oldAlice.request(frame)).code;
      assert.equal(code, "not_authenticated", frame.type);
    }
    assert.equal(
      errorOf(await oldAlice.request({ type: "mail_ack", messages: [] })).code,
      "not_authenticated",
    );
    // The old token cannot come back either, not even on the grace connection.
    const oldToken = oldSession.token;
    assert.equal(
      errorOf(await oldAlice.request({ type: "resume", token: oldToken })).code,
      "not_authenticated",
    );
    const elsewhere = await connect(s2);
    const resumed = errorOf(await elsewhere.request({ type: "resume", token: oldToken }));
    assert.equal(resumed.code, "not_authenticated");
    assert.match(resumed.message, /Signed in elsewhere/);

    // Browsers cannot forge the servers' markers, from either side.
    for (const c of [newAlice, oldAlice, bob]) {
      c.send({ type: "signal", to: "alice", data: { "p2pchat:handover": "current", a: 1 } });
      const e = errorOf(await c.next((f) => f.type === "error"));
      assert.equal(e.code, "bad_frame");
      assert.match(e.message, /reserved/);
    }
    // A browser cannot send the server-only frames at all.
    newAlice.send({ type: "session_started", sessionId: "forged", issuedAt: Date.now() + 1e6 });
    assert.equal(errorOf(await newAlice.next((f) => f.type === "error")).code, "unknown_type");
    newAlice.send({ type: "handover_signal", toward: "handover", current: "x", data: {} });
    assert.equal(errorOf(await newAlice.next((f) => f.type === "error")).code, "unknown_type");

    // Presence changes of others do not reach the grace connection; bob got none of the above.
    await bob.close();
    await waitFor(
      "presence of bob's logout at alice",
      () => newAlice.frames.some((f) => f.type === "presence" && f.username === "bob"),
    );
    assert.equal(oldAlice.frames.some((f) => f.type === "presence"), false);

    // A third login, on the other server: the second session enters its grace, the first one
    // (whose hand-over was to the second) is closed.
    const thirdAlice = await connect(s2);
    // The grace starts when s2 receives this login, so no earlier than now.
    const supersededAt = Date.now();
    await thirdAlice.login("alice", "alice-secret-1", false);
    const second = await newAlice.next((f) => f.type === "superseded");
    assert.ok(second.type === "superseded" && second.handoverMs === GRACE_MS);
    await oldAlice.waitClosed("the server to close the first grace connection");
    await waitFor(
      "the first grace to end",
      () => handoverEnds(s1).some((l) => l.reason === "superseded again"),
    );

    // Across servers, both ways: s1's grace connection and s2's current session.
    newAlice.send({ type: "signal", to: "alice", data: { type: "offer", sdp: "s1", lid: "2" } });
    assert.deepEqual(await signalFrom(thirdAlice, "alice"), { type: "offer", sdp: "s1", lid: "2" });
    thirdAlice.send({ type: "signal", to: "alice", data: { type: "answer", sdp: "s2", lid: "2" } });
    assert.deepEqual(await signalFrom(newAlice, "alice"), { type: "answer", sdp: "s2", lid: "2" });

    // Another user's grace connection that falls silent is closed before its grace ends.
    const oldCarol = await connect(s1);
    // Its silence starts with its last frame (the login), so no earlier than now.
    const carolSilentFrom = Date.now();
    await oldCarol.login("carol", "carol-secret-1");
    const newCarol = await connect(s2);
    await newCarol.login("carol", "carol-secret-1", false);
    await oldCarol.next((f) => f.type === "superseded");

    // Alice's second device keeps its connection alive: it is closed when the grace is over.
    // (So do the current sessions, which would otherwise time out too.)
    for (const c of [newAlice, thirdAlice, newCarol]) {
      heartbeats.push(setInterval(() => c.send({ type: "heartbeat" }), 2_000));
    }
    // Ended for its silence (the log's reason), not for the end of its grace.
    await waitFor(
      "the silent grace connection to be closed",
      () => handoverEnds(s1).find((l) => l.username === "carol")?.reason,
      GRACE_MS + 10_000,
      250,
    ).then((reason) => assert.equal(reason, "silent"));
    const silentAfter = Date.now() - carolSilentFrom;
    assert.ok(silentAfter >= 15_000, `closed after ${silentAfter} ms of silence`);
    await oldCarol.waitClosed("the server to close the silent grace connection");
    assert.ok(await isOpen(newAlice), "the heartbeating grace connection is still open");
    await waitFor(
      "the grace to end",
      () => handoverEnds(s1).some((l) => l.username === "alice" && l.reason === "grace over"),
      GRACE_MS + 10_000,
      100,
    );
    const closedAfter = Date.now() - supersededAt;
    assert.ok(closedAfter >= GRACE_MS, `closed after ${closedAfter} ms`);
    await newAlice.waitClosed("the server to close the grace connection at the end of its grace");
    // The current sessions are untouched.
    const watch = { type: "watch", usernames: ["bob"] };
    assert.equal((await thirdAlice.request(watch)).type, "presence_list");
    assert.equal((await newCarol.request(watch)).type, "presence_list");
  } finally {
    for (const h of heartbeats) clearInterval(h);
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await Promise.all(servers.map((s) => s.stop()));
  }
});

Deno.test("handover: a self-signal with no other device of the user gets peer_offline", async () => {
  const servers = await startCluster(2, { env: GRACE_ENV });
  const clients: TestClient[] = [];
  try {
    const alice = await TestClient.connect(servers[0]!.url);
    clients.push(alice);
    await alice.login("alice", "alice-secret-1");
    alice.send({ type: "signal", to: "alice", data: { type: "offer", sdp: "x" } });
    const e = errorOf(await alice.next((f) => f.type === "error"));
    assert.equal(e.code, "peer_offline");
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await Promise.all(servers.map((s) => s.stop()));
  }
});
