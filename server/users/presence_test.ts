import assert from "node:assert/strict";
import { FakeConnection, FakeRing, fakeServer, TEST_ACCOUNT } from "./testing.ts";
import { ManualClock } from "../../shared/clock.ts";
import type { ClusterRequest, ClusterResponse } from "../../shared/mod.ts";

const SECRET = "a".repeat(43);

/** Presence frames `conn` received about `username`, as "on"/"off". */
function seen(conn: FakeConnection, username: string): string[] {
  return conn.framesOf("presence").filter((f) => f.username === username)
    .map((f) => f.online ? "on" : "off");
}

Deno.test("presence: a session refreshed every 5 s stays online; when refreshes stop it expires after the TTL", async () => {
  const clock = new ManualClock();
  const ring = new FakeRing(clock);
  const a = fakeServer({ self: "http://node-a:8000", clock, ring, peers: ["http://node-b:8000"] });
  const b = fakeServer({ self: "http://node-b:8000", clock, ring, peers: ["http://node-a:8000"] });
  // The primary's notices reach both servers (in the real cluster: a signed `presence` call).
  ring.onPresenceChange((r, online) =>
    b.presence.receiveNotice({ v: 1, type: "presence", ...r, online })
  );
  a.start();
  b.start();
  await a.accounts.register({ username: "alice", secret: SECRET, ...TEST_ACCOUNT });
  await a.accounts.register({ username: "bob", secret: SECRET, ...TEST_ACCOUNT });
  const bob = new FakeConnection(clock);
  b.sessions.connect(bob);
  await b.sessions.login(bob, "bob", SECRET);
  assert.ok(b.local.watch(bob, ["alice"]));
  const alice = new FakeConnection(clock);
  a.sessions.connect(alice);
  await a.sessions.login(alice, "alice", SECRET);
  assert.deepEqual(seen(bob, "alice"), ["on"]);
  assert.equal(b.presence.homeOf("alice"), "http://node-a:8000");
  // A minute of virtual time: node-a's refresh keeps alice's record alive (TTL 15 s).
  for (let i = 0; i < 60; i++) {
    alice.touch();
    bob.touch();
    await clock.advance(1000);
    ring.sweep();
  }
  assert.deepEqual(seen(bob, "alice"), ["on"], "no flapping while refreshed");
  // node-a freezes: no refresh, no offline write. The record runs out after its TTL.
  await a.presence.stop();
  for (let i = 0; i < 14; i++) {
    bob.touch();
    await clock.advance(1000);
    ring.sweep();
  }
  assert.deepEqual(seen(bob, "alice"), ["on"], "still online within the TTL");
  bob.touch();
  await clock.advance(2000);
  ring.sweep();
  assert.deepEqual(seen(bob, "alice"), ["on", "off"]);
  assert.equal(b.presence.isOnline("alice"), false);
  await b.stop();
});

/** Server node-b (its peer node-c) with bob logged in and watching carol. */
async function bobOnNodeBWatchingCarol() {
  const clock = new ManualClock();
  const b = fakeServer({ self: "http://node-b:8000", clock, peers: ["http://node-c:8000"] });
  b.start();
  await b.accounts.register({ username: "bob", secret: SECRET, ...TEST_ACCOUNT });
  const bob = new FakeConnection(clock);
  b.sessions.connect(bob);
  await b.sessions.login(bob, "bob", SECRET);
  b.local.watch(bob, ["carol"]);
  return { clock, b, bob };
}

Deno.test("presence: users homed on a server that dies go offline for local clients at once", async () => {
  const { clock, b, bob } = await bobOnNodeBWatchingCarol();
  b.presence.receiveNotice({
    v: 1,
    type: "presence",
    username: "carol",
    home: "http://node-c:8000",
    online: true,
    updatedAt: clock.now(),
  });
  assert.deepEqual(seen(bob, "carol"), ["on"]);
  b.membership.setAlive("http://node-c:8000", false);
  assert.deepEqual(seen(bob, "carol"), ["on", "off"]);
  assert.equal(b.presence.homeOf("carol"), undefined);
  // A late notice older than what is known changes nothing.
  b.presence.receiveNotice({
    v: 1,
    type: "presence",
    username: "bob",
    home: "http://node-c:8000",
    online: false,
    updatedAt: 1,
  });
  assert.equal(b.presence.isOnline("bob"), true, "bob's own session is known locally");
  await b.stop();
});

Deno.test("routing: a stale cache falls back to the ring record, and the cache learns it", async () => {
  const clock = new ManualClock();
  const delivered: string[] = [];
  const a = fakeServer({
    self: "http://node-a:8000",
    clock,
    peers: ["http://node-b:8000", "http://node-c:8000"],
    call: (to, request) => {
      if (request.type !== "deliver") return Promise.resolve({ v: 1, type: "ok" });
      // bob's session moved from node-b to node-c; node-b has no connection of his any more.
      if (to === "http://node-c:8000") {
        delivered.push(`${to}:${request.frame.type}`);
        return Promise.resolve({ v: 1, type: "ok" });
      }
      return Promise.resolve({
        v: 1,
        type: "error",
        code: "peer_offline",
        message: "bob is offline",
      });
    },
  });
  a.presence.receiveNotice({
    v: 1,
    type: "presence",
    username: "bob",
    home: "http://node-b:8000",
    online: true,
    updatedAt: clock.now(),
  });
  await a.ring.as("http://node-c:8000").publishPresence(
    [{ username: "bob", online: true }],
    15_000,
  );
  const ok = await a.routing.deliver("bob", { v: 1, type: "mail_waiting" });
  assert.equal(ok, true);
  assert.deepEqual(delivered, ["http://node-c:8000:mail_waiting"]);
  assert.equal(a.presence.homeOf("bob"), "http://node-c:8000");
  // Offline by the ring record too: false, and nothing is sent.
  await a.ring.as("http://node-c:8000").publishPresence([{ username: "bob", online: false }], 0);
  a.membership.setAlive("http://node-c:8000", false);
  assert.equal(await a.routing.deliver("bob", { v: 1, type: "mail_waiting" }), false);
  assert.equal(delivered.length, 1);
  await a.stop();
});

Deno.test("watch: presence goes only to the connections watching the name, until they stop or leave", async () => {
  const clock = new ManualClock();
  const a = fakeServer({ self: "http://node-a:8000", clock });
  a.start();
  for (const username of ["alice", "bob", "carol", "dave"]) {
    await a.accounts.register({ username, secret: SECRET, ...TEST_ACCOUNT });
  }
  const login = async (username: string) => {
    const conn = new FakeConnection(clock);
    a.sessions.connect(conn);
    await a.sessions.login(conn, username, SECRET);
    return conn;
  };
  const bob = await login("bob");
  const carol = await login("carol");
  const stranger = new FakeConnection(clock);
  a.sessions.connect(stranger);
  assert.equal(a.local.watch(stranger, ["alice"]), false, "not logged in: no watch list");
  assert.ok(a.local.watch(bob, ["alice", "dave"]));
  assert.ok(a.local.watch(carol, ["dave"]));
  assert.equal(a.local.watcherCount("alice"), 1);
  assert.equal(a.local.watcherCount("dave"), 2);

  const alice = await login("alice");
  assert.deepEqual(seen(bob, "alice"), ["on"]);
  assert.deepEqual(seen(carol, "alice"), [], "carol does not watch alice");
  assert.deepEqual(seen(stranger, "alice"), []);
  assert.equal(alice.framesOf("presence").length, 0, "alice watches nobody");

  // The list is replaced, not extended: bob stops hearing of alice.
  assert.ok(a.local.watch(bob, ["dave", "dave"]));
  assert.deepEqual(a.local.watchedBy(bob), ["dave"]);
  assert.equal(a.local.watcherCount("alice"), 0, "no empty entry stays behind");
  const dave = await login("dave");
  assert.deepEqual(seen(bob, "dave"), ["on"]);
  assert.deepEqual(seen(carol, "dave"), ["on"]);
  await a.sessions.logout(alice);
  assert.deepEqual(seen(bob, "alice"), ["on"], "no notice after the name left the list");

  // A connection that ends leaves the index: nothing refers to it any more.
  a.sessions.disconnect(carol);
  assert.equal(a.local.watcherCount("dave"), 1);
  a.sessions.disconnect(dave);
  assert.deepEqual(seen(bob, "dave"), ["on", "off"]);
  bob.touch();
  await clock.advance(1000);
  const bob2 = await login("bob");
  assert.deepEqual(a.local.watchedBy(bob2), [], "a new login starts with an empty list");
  await a.stop();
});

Deno.test("presence: a server that finds a peer alive learns its sessions within a second, not at the next 15 s round", async () => {
  const clock = new ManualClock();
  const ring = new FakeRing(clock);
  const a = fakeServer({ self: "http://node-a:8000", clock, ring, peers: ["http://node-b:8000"] });
  const b = fakeServer({ self: "http://node-b:8000", clock, ring, peers: ["http://node-a:8000"] });
  a.start();
  await a.accounts.register({ username: "alice", secret: SECRET, ...TEST_ACCOUNT });
  await a.accounts.register({ username: "bob", secret: SECRET, ...TEST_ACCOUNT });
  const alice = new FakeConnection(clock);
  a.sessions.connect(alice);
  await a.sessions.login(alice, "alice", SECRET);
  // node-b starts (a restart: an empty cache) before it has heard of node-a.
  b.membership.setAlive("http://node-a:8000", false);
  b.start();
  const bob = new FakeConnection(clock);
  b.sessions.connect(bob);
  await b.sessions.login(bob, "bob", SECRET);
  b.local.watch(bob, ["alice"]);
  assert.equal(b.presence.isOnline("alice"), false);
  b.membership.setAlive("http://node-a:8000", true);
  for (let i = 0; i < 4 && seen(bob, "alice").length === 0; i++) {
    alice.touch();
    bob.touch();
    await clock.advance(250);
  }
  assert.deepEqual(seen(bob, "alice"), ["on"]);
  assert.equal(b.presence.homeOf("alice"), "http://node-a:8000");
  await a.stop();
  await b.stop();
});

Deno.test("presence: a status notice a peer did not acknowledge is sent again, so its watchers still hear the login", async () => {
  const clock = new ManualClock();
  let refused = 0;
  const b = fakeServer({ self: "http://node-b:8000", clock, peers: ["http://node-a:8000"] });
  // node-a's ring is its own: node-b hears of alice only through node-a's notices.
  const a = fakeServer({
    self: "http://node-a:8000",
    clock,
    peers: ["http://node-b:8000"],
    call: (to, request) => {
      if (request.type !== "presence" || to !== "http://node-b:8000") {
        return Promise.resolve({ v: 1, type: "ok" });
      }
      // node-b was busy past the call's deadline the first time.
      if (refused++ === 0) return Promise.reject(new Error("no answer within 2000 ms"));
      b.presence.receiveNotice(request);
      return Promise.resolve({ v: 1, type: "ok" });
    },
  });
  a.start();
  b.start();
  await a.accounts.register({ username: "alice", secret: SECRET, ...TEST_ACCOUNT });
  await b.accounts.register({ username: "bob", secret: SECRET, ...TEST_ACCOUNT });
  const bob = new FakeConnection(clock);
  b.sessions.connect(bob);
  await b.sessions.login(bob, "bob", SECRET);
  assert.ok(b.local.watch(bob, ["alice"]));
  const alice = new FakeConnection(clock);
  a.sessions.connect(alice);
  await a.sessions.login(alice, "alice", SECRET);
  assert.deepEqual(seen(bob, "alice"), [], "the first notice was lost");
  for (let i = 0; i < 4 && seen(bob, "alice").length === 0; i++) await clock.advance(500);
  assert.deepEqual(seen(bob, "alice"), ["on"], "the notice sent again reached bob");
  assert.equal(b.presence.homeOf("alice"), "http://node-a:8000");
  assert.equal(refused, 2, "sent once more, not again after it was acknowledged");
  await a.stop();
  await b.stop();
});

/**
 * node-a's calls to node-b of requests whose type starts with `kind`: recorded in `toB` and
 * answered by `answer`, the first only once `answerFirst()` is called (node-b is slow to answer
 * it); any other call is answered ok at once.
 */
function slowFirstCallToB(kind: string, answer: (request: ClusterRequest) => ClusterResponse) {
  const toB: ClusterRequest[] = [];
  let release: (() => void) | undefined;
  const call = (to: string, request: ClusterRequest): Promise<ClusterResponse> => {
    if (to !== "http://node-b:8000" || !request.type.startsWith(kind)) {
      return Promise.resolve({ v: 1, type: "ok" });
    }
    toB.push(request);
    const res = answer(request);
    if (toB.length > 1) return Promise.resolve(res);
    return new Promise((resolve) => release = () => resolve(res));
  };
  return { call, toB, answerFirst: () => release!() };
}

Deno.test("presence: notices that come while a call to a server is under way go in one batch next", async () => {
  const clock = new ManualClock();
  const b = fakeServer({ self: "http://node-b:8000", clock, peers: ["http://node-a:8000"] });
  const { call, toB, answerFirst } = slowFirstCallToB("presence", (request) => {
    if (request.type === "presence") b.presence.receiveNotice(request);
    if (request.type === "presence_batch") {
      for (const n of request.notices) b.presence.receiveNotice(n);
    }
    return { v: 1, type: "ok" };
  });
  const a = fakeServer({ self: "http://node-a:8000", clock, peers: ["http://node-b:8000"], call });
  a.start();
  b.start();
  const names = ["alice", "carol", "dave", "erin"];
  for (const name of names) {
    await a.accounts.register({ username: name, secret: SECRET, ...TEST_ACCOUNT });
  }
  for (const name of names) {
    const conn = new FakeConnection(clock);
    a.sessions.connect(conn);
    await a.sessions.login(conn, name, SECRET);
  }
  assert.deepEqual(toB.map((r) => r.type), ["presence"], "one call at a time to node-b");
  answerFirst();
  await clock.advance(10);
  assert.deepEqual(toB.map((r) => r.type), ["presence", "presence_batch"]);
  const batch = toB[1] as Extract<ClusterRequest, { type: "presence_batch" }>;
  assert.deepEqual(batch.notices.map((n) => n.username), ["carol", "dave", "erin"]);
  assert.ok(batch.notices.every((n) => n.online && n.home === "http://node-a:8000"));
  for (const name of names) assert.equal(b.presence.homeOf(name), "http://node-a:8000");
  await a.stop();
  await b.stop();
});

Deno.test("routing: frames for a server that come while a call to it is under way go in one batch, each with its own answer", async () => {
  const clock = new ManualClock();
  const { call, toB, answerFirst } = slowFirstCallToB("deliver", (request) => {
    if (request.type !== "deliver_batch") return { v: 1, type: "ok" };
    // carol left node-b: her frame is not taken.
    const delivered = request.items.map((item) => item.to !== "carol");
    return { v: 1, type: "deliver_results", delivered };
  });
  const a = fakeServer({ self: "http://node-a:8000", clock, peers: ["http://node-b:8000"], call });
  for (const username of ["bob", "carol", "dave"]) {
    a.presence.receiveNotice({
      username,
      home: "http://node-b:8000",
      online: true,
      updatedAt: clock.now(),
    });
  }
  const relay = (from: string) => ({ v: 1 as const, type: "relay" as const, from, payload: "hi" });
  const first = a.routing.deliver("bob", relay("alice"));
  await clock.advance(10); // the first call is under way
  const rest = ["bob", "carol", "dave"].map((to) => a.routing.deliver(to, relay("erin")));
  await clock.advance(10);
  assert.deepEqual(toB.map((r) => r.type), ["deliver"], "one call at a time to node-b");
  answerFirst();
  assert.equal(await first, true);
  assert.deepEqual(await Promise.all(rest), [true, false, true]);
  assert.deepEqual(toB.map((r) => r.type), ["deliver", "deliver_batch"]);
  const batch = toB[1] as Extract<ClusterRequest, { type: "deliver_batch" }>;
  assert.deepEqual(batch.items.map((i) => i.to), ["bob", "carol", "dave"]);
  await a.stop();
});

/** `server` hears that carol is online at node-c. */
function carolOnlineAtNodeC(server: ReturnType<typeof fakeServer>, clock: ManualClock) {
  server.presence.receiveNotice({
    username: "carol",
    home: "http://node-c:8000",
    online: true,
    updatedAt: clock.now(),
  });
}

Deno.test("presence: a peer thought dead for a moment is back with its users at once", async () => {
  const { clock, b, bob } = await bobOnNodeBWatchingCarol();
  carolOnlineAtNodeC(b, clock);
  b.membership.setAlive("http://node-c:8000", false);
  assert.equal(b.presence.homeOf("carol"), undefined, "not routable while node-c is dead");
  await clock.advance(3000);
  b.membership.setAlive("http://node-c:8000", true);
  assert.equal(b.presence.homeOf("carol"), "http://node-c:8000", "routable again at once");
  assert.deepEqual(seen(bob, "carol"), ["on", "off", "on"]);
  await b.stop();
});

Deno.test("presence: a peer dead for longer than a record lives comes back with nobody known online", async () => {
  const clock = new ManualClock();
  const b = fakeServer({
    self: "http://node-b:8000",
    clock,
    peers: ["http://node-c:8000"],
    // No directory round meanwhile: the cache alone decides.
    presence: { directoryRefreshMs: 600_000 },
  });
  b.start();
  carolOnlineAtNodeC(b, clock);
  b.membership.setAlive("http://node-c:8000", false);
  await clock.advance(20_000);
  b.membership.setAlive("http://node-c:8000", true);
  assert.equal(b.presence.homeOf("carol"), undefined, "a restarted node-c holds no session");
  await b.stop();
});
