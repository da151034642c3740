import assert from "node:assert/strict";
import { SUPERSEDED_CLOSE_CODE } from "../../shared/mod.ts";
import { ManualClock } from "../../shared/clock.ts";
import { FakeConnection, fakeServer, TEST_ACCOUNT } from "./testing.ts";
import { UserError } from "./errors.ts";
import { HANDOVER_PROGRESS_SIGNAL, SUPERSEDED_MESSAGE } from "./sessions.ts";
import { NAME_LOST_MESSAGE } from "./accounts.ts";
import { hash } from "bcryptjs";

const SECRET = "a".repeat(43);

/** alice logged in on `old`, then a millisecond later on `fresh` (which supersedes it). */
async function loggedInTwice(server: ReturnType<typeof fakeServer>) {
  const old = new FakeConnection(server.clock);
  const fresh = new FakeConnection(server.clock);
  server.sessions.connect(old);
  server.sessions.connect(fresh);
  await server.sessions.login(old, "alice", SECRET);
  await server.clock.advance(1);
  await server.sessions.login(fresh, "alice", SECRET);
  return { old, fresh };
}

async function registered(server: ReturnType<typeof fakeServer>, username = "alice") {
  await server.accounts.register({ username, secret: SECRET, ...TEST_ACCOUNT });
}

Deno.test("sessions: two logins of one user racing on one server leave one session, the other hands over", async () => {
  const server = fakeServer({ sessions: { handoverGraceMs: 30_000 } });
  server.start();
  await registered(server);
  const [a, b] = [new FakeConnection(server.clock), new FakeConnection(server.clock)];
  server.sessions.connect(a);
  server.sessions.connect(b);
  const results = await Promise.allSettled([
    server.sessions.login(a, "alice", SECRET),
    server.sessions.login(b, "alice", SECRET),
  ]);
  const current = server.local.connectionOf("alice") as FakeConnection | undefined;
  assert.ok(current === a || current === b, "one of the two carries alice's session");
  const other = current === a ? b : a;
  const [mine, theirs] = current === a ? results : [results[1], results[0]];
  assert.equal(mine!.status, "fulfilled", "the newer login succeeds");
  if (theirs!.status === "rejected") {
    // Overtaken while it was being bound: told so, never handed a session that is not current.
    assert.ok(theirs!.reason instanceof UserError);
    assert.equal(theirs!.reason.message, SUPERSEDED_MESSAGE);
  }
  assert.equal(server.sessions.userOf(current!), "alice");
  assert.equal(server.sessions.userOf(other), undefined, "the older login left the session");
  assert.equal(server.sessions.graceUserOf(other), "alice", "and may hand its history over");
  assert.deepEqual(other.framesOf("superseded").map((f) => f.message), [SUPERSEDED_MESSAGE]);
  assert.equal(current!.framesOf("superseded").length, 0);
  assert.equal(server.presence.isOnline("alice"), true);
  assert.equal(server.local.onlineUsernames().length, 1);
  // A token of the older session no longer resumes on this server.
  if (theirs!.status === "fulfilled") {
    const third = new FakeConnection(server.clock);
    server.sessions.connect(third);
    await assert.rejects(
      server.sessions.resume(third, theirs!.value.token),
      (err) => err instanceof UserError && err.code === "not_authenticated",
    );
  }
  await server.stop();
});

Deno.test("sessions: the hand-over grace ends on time, and a silent connection is closed", async () => {
  const server = fakeServer({ sessions: { handoverGraceMs: 20_000, presenceTimeoutMs: 15_000 } });
  server.start();
  await registered(server);
  const { old, fresh } = await loggedInTwice(server);
  assert.equal(server.sessions.graceUserOf(old), "alice");
  // Both keep talking; the grace alone ends the old one.
  for (let t = 0; t < 19; t++) {
    old.touch();
    fresh.touch();
    await server.clock.advance(1000);
  }
  assert.equal(old.closed, undefined, "still in its grace at 19 s");
  old.touch();
  fresh.touch();
  await server.clock.advance(1000);
  assert.equal(old.closeCode(), SUPERSEDED_CLOSE_CODE, "closed when the grace is over");
  assert.equal(server.local.has(old), false);
  // The new session falls silent: it is closed after the heartbeat timeout and goes offline.
  await server.clock.advance(14_000);
  assert.equal(fresh.closed, undefined);
  await server.clock.advance(6_000);
  assert.equal(fresh.closeCode(), 4000);
  assert.equal(server.presence.isOnline("alice"), false);
  assert.equal(server.ring.presence.get("alice")!.expiresAt <= server.clock.now(), true);
  assert.equal(server.clock.pendingTimers > 0, true, "the rounds still run");
  await server.stop();
  assert.equal(server.clock.pendingTimers, 0, "stop leaves no timer behind");
});

/**
 * A clock whose process can stall: {@link stall} moves the time on without running any timer (or
 * any client frame) — the event loop was busy elsewhere — and timers then run late, as they do.
 */
class StallingClock extends ManualClock {
  #skew = 0;
  override now(): number {
    return super.now() + this.#skew;
  }
  stall(ms: number): void {
    this.#skew += ms;
  }
}

/**
 * Starts `server` with alice and bob logged in, both heartbeating every 5 s for a while; then bob
 * freezes (15 s after his last frame) while alice has just sent one more.
 */
async function aliceHeartbeatsBobFreezes(
  server: ReturnType<typeof fakeServer>,
  clock: ManualClock,
): Promise<{ alice: FakeConnection; bob: FakeConnection }> {
  server.start();
  await registered(server);
  await registered(server, "bob");
  const alice = new FakeConnection(clock);
  const bob = new FakeConnection(clock);
  server.sessions.connect(alice);
  server.sessions.connect(bob);
  await server.sessions.login(alice, "alice", SECRET);
  await server.sessions.login(bob, "bob", SECRET);
  for (let t = 0; t < 4; t++) {
    alice.touch();
    if (t < 3) bob.touch();
    await clock.advance(5000);
  }
  alice.touch();
  return { alice, bob };
}

Deno.test("sessions: a stall of the server's own event loop does not close heartbeating clients; a frozen one is still closed", async () => {
  const clock = new StallingClock();
  const server = fakeServer({ clock, sessions: { presenceTimeoutMs: 15_000 } });
  const { alice, bob } = await aliceHeartbeatsBobFreezes(server, clock);
  await clock.advance(4900);
  // The server stalls for 20 s: the heartbeats alice sent meanwhile wait unread. When it runs
  // again, its timers (the sweep among them) come before those frames.
  clock.stall(20_000);
  await clock.advance(200);
  assert.equal(alice.closed, undefined, "alice's heartbeats were late on the server, not missing");
  assert.equal(bob.closed, undefined, "bob is judged on time the server listened");
  // Alice's waiting heartbeats are read; she goes on. Bob froze before the stall.
  for (let t = 0; t < 6; t++) {
    alice.touch();
    await clock.advance(5000);
  }
  assert.equal(alice.closed, undefined, "alice is still connected");
  assert.equal(server.presence.isOnline("alice"), true);
  // Bob's last frame is over 40 s old: the timeout plus the stall is over, so he is closed.
  assert.equal(bob.closeCode(), 4000, "a frozen client is closed");
  assert.equal(server.presence.isOnline("bob"), false);
  await server.stop();
  assert.equal(clock.pendingTimers, 0, "stop leaves no timer behind");
});

Deno.test("sessions: socket reads falling behind while timers run on time do not close heartbeating clients", async () => {
  const clock = new ManualClock();
  /** From when the server's socket reads have been behind (its I/O probe's byte waits). */
  let behindSince: number | undefined;
  const ioLag = () => behindSince === undefined ? 0 : clock.now() - behindSince;
  const server = fakeServer({ clock, ioLag, sessions: { presenceTimeoutMs: 15_000 } });
  const { alice, bob } = await aliceHeartbeatsBobFreezes(server, clock);
  // Reads fall 20 s behind: alice's heartbeats wait unread while the sweeps run on time.
  behindSince = clock.now();
  await clock.advance(20_000);
  assert.equal(alice.closed, undefined, "alice's heartbeats were unread, not missing");
  // The reads catch up: alice's waiting heartbeats arrive; bob sent none.
  behindSince = undefined;
  for (let t = 0; t < 6; t++) {
    alice.touch();
    await clock.advance(5000);
  }
  assert.equal(alice.closed, undefined, "alice is still connected");
  assert.equal(bob.closeCode(), 4000, "a frozen client is closed");
  await server.stop();
});

Deno.test("sessions: progress of the hand-over extends the grace, up to its bound", async () => {
  const server = fakeServer({ sessions: { handoverGraceMs: 20_000, handoverMaxMs: 60_000 } });
  server.start();
  await registered(server);
  const { old, fresh } = await loggedInTwice(server);
  const progress = (done: number) =>
    server.sessions.signalOwnDevice(old, { type: HANDOVER_PROGRESS_SIGNAL, done, total: 1e6 });
  const tick = async (ms: number) => {
    for (let t = 0; t < ms; t += 1000) {
      old.touch();
      fresh.touch();
      await server.clock.advance(1000);
    }
  };
  // At 10 s the old device reports rows handed over: its grace now ends at 30 s.
  await tick(10_000);
  await progress(1_000);
  await tick(19_000);
  assert.equal(old.closed, undefined, "still open at 29 s");
  // The same count again is no progress.
  await progress(1_000);
  await tick(1_000);
  assert.equal(old.closeCode(), SUPERSEDED_CLOSE_CODE, "closed a grace after the last progress");
  assert.equal(fresh.framesOf("handover_signal").length, 0, "progress is not passed on");

  // Progress all the time: open until the bound, 60 s after the grace began, then closed.
  const older = new FakeConnection(server.clock);
  server.sessions.connect(older);
  const newer = new FakeConnection(server.clock);
  server.sessions.connect(newer);
  await registered(server, "bob");
  await server.sessions.login(older, "bob", SECRET);
  await server.clock.advance(1);
  await server.sessions.login(newer, "bob", SECRET);
  let done = 0;
  for (let t = 0; t < 59; t++) {
    older.touch();
    newer.touch();
    await server.sessions.signalOwnDevice(older, { type: HANDOVER_PROGRESS_SIGNAL, done: ++done });
    await server.clock.advance(1000);
  }
  assert.equal(older.closed, undefined, "open at 59 s while progress continues");
  older.touch();
  newer.touch();
  await server.clock.advance(1000);
  assert.equal(older.closeCode(), SUPERSEDED_CLOSE_CODE, "closed at the bound");
  await server.stop();
});

Deno.test("sessions: wrong passwords are limited before the right one is even checked", async () => {
  const server = fakeServer();
  await registered(server);
  const conn = new FakeConnection(server.clock);
  server.sessions.connect(conn);
  for (let i = 0; i < 5; i++) {
    await assert.rejects(
      server.sessions.login(conn, "alice", "b".repeat(43)),
      (err) => err instanceof UserError && err.code === "wrong_credentials",
    );
  }
  await assert.rejects(
    server.sessions.login(conn, "alice", SECRET),
    (err) => err instanceof UserError && err.code === "rate_limited",
  );
  // One failure's worth of tokens refills in 12 s (5 per minute).
  await server.clock.advance(12_000);
  const grant = await server.sessions.login(conn, "alice", SECRET);
  assert.equal(grant.username, "alice");
  await server.stop();
});

Deno.test("sessions: a genuine token whose account the ring cannot read is 'unavailable'; one the ring says is gone is 'unknown_account'", async () => {
  const server = fakeServer();
  await registered(server);
  const conn = new FakeConnection(server.clock);
  server.sessions.connect(conn);
  const { token } = await server.sessions.login(conn, "alice", SECRET);
  // Another server whose ring cannot reach alice's copies right now (they are cached here).
  const other = fakeServer({ self: "http://node-b:8000", clock: server.clock });
  other.ring.unavailable = true;
  const conn2 = new FakeConnection(server.clock);
  other.sessions.connect(conn2);
  await assert.rejects(
    other.sessions.resume(conn2, token),
    (err) =>
      err instanceof UserError && err.code === "unavailable" && /unreachable/.test(err.message),
  );
  // A ring that answers for sure that there is no such account.
  other.ring.unavailable = false;
  await assert.rejects(
    other.sessions.resume(conn2, token),
    (err) => err instanceof UserError && err.code === "unknown_account",
  );
  other.ring.accounts = server.ring.accounts;
  const grant = await other.sessions.resume(conn2, token);
  assert.equal(grant.username, "alice");
  await Promise.all([server.stop(), other.stop()]);
});

Deno.test("sessions: a login elsewhere, heard from another server, supersedes the local session", async () => {
  const server = fakeServer({ sessions: { handoverGraceMs: 0 } });
  await registered(server);
  const conn = new FakeConnection(server.clock);
  server.sessions.connect(conn);
  await server.sessions.login(conn, "alice", SECRET);
  // The login announced itself to every other live server (none here) ...
  assert.equal(
    server.sessions.receive("alice", {
      v: 1,
      type: "session_started",
      sessionId: "zzz",
      issuedAt: server.clock.now() + 5,
    }),
    true,
  );
  assert.equal(conn.closeCode(), SUPERSEDED_CLOSE_CODE, "no grace: closed at once");
  assert.equal(server.local.hasSession("alice"), false);
  // ... and an older notice arriving late changes nothing.
  const again = new FakeConnection(server.clock);
  server.sessions.connect(again);
  await assert.rejects(
    server.sessions.login(again, "alice", SECRET).then(() =>
      server.sessions.receive("alice", {
        v: 1,
        type: "session_started",
        sessionId: "aaa",
        issuedAt: 1,
      })
    ).then(() => {
      if (again.closed) throw new Error("closed by an older notice");
      throw new UserError("not_authenticated", "still open, as it must be");
    }),
    (err) => err instanceof UserError,
  );
  await server.stop();
});

Deno.test("sessions: a registration that lost its name to an older one is signed out everywhere and its token refused", async () => {
  const a = fakeServer({ self: "http://node-a:8000" });
  const b = fakeServer({ self: "http://node-b:8000", ring: a.ring, clock: a.clock });
  const LOSER = "l".repeat(43);
  const WINNER = "w".repeat(43);
  await a.accounts.register({ username: "alice", secret: LOSER, ...TEST_ACCOUNT });
  const onA = new FakeConnection(a.clock);
  const onB = new FakeConnection(a.clock);
  a.sessions.connect(onA);
  b.sessions.connect(onB);
  const { token } = await a.sessions.login(onA, "alice", LOSER);
  await b.sessions.resume(onB, token); // b caches the loser's account too
  // The heal: an older registration of "alice" (from the other side) wins on every copy.
  a.ring.replaceAccount({ username: "alice", hash: await hash(WINNER, 4), createdAt: -1 });
  for (const conn of [onA, onB]) {
    assert.deepEqual(conn.framesOf("superseded").map((f) => f.message), [NAME_LOST_MESSAGE]);
    assert.equal(conn.closeCode(), SUPERSEDED_CLOSE_CODE);
  }
  for (const server of [a, b]) {
    await a.clock.advance(1000); // each login is newer than the sessions before it
    const conn = new FakeConnection(a.clock);
    server.sessions.connect(conn);
    await assert.rejects(
      server.sessions.resume(conn, token),
      (err) => err instanceof UserError && err.message === NAME_LOST_MESSAGE,
    );
    await assert.rejects(
      server.sessions.login(conn, "alice", LOSER),
      (err) => err instanceof UserError && err.code === "wrong_credentials",
    );
    assert.equal((await server.sessions.login(conn, "alice", WINNER)).username, "alice");
  }
  await a.stop();
  await b.stop();
});

Deno.test("sessions: sixty parallel wrong passwords and the right one get at most five guesses through", async () => {
  const server = fakeServer();
  await registered(server);
  const conn = new FakeConnection(server.clock);
  server.sessions.connect(conn);
  const attempts = [
    ...Array.from({ length: 60 }, () => server.sessions.login(conn, "alice", "b".repeat(43))),
    server.sessions.login(conn, "alice", SECRET),
  ];
  const codes = (await Promise.allSettled(attempts)).map((r) =>
    r.status === "fulfilled" ? "session" : (r.reason as UserError).code
  );
  const guesses = codes.filter((c) => c === "wrong_credentials").length;
  assert.ok(guesses <= 5, `${guesses} wrong passwords were checked`);
  assert.equal(
    codes.filter((c) => c === "rate_limited").length,
    61 - guesses - (codes.at(-1) === "session" ? 1 : 0),
  );
  await server.stop();
});

Deno.test("accounts: registrations from one address are limited before any work is done", async () => {
  const server = fakeServer();
  for (let i = 0; i < 30; i++) {
    await server.accounts.register(
      { username: `user-${i}`, secret: SECRET, ...TEST_ACCOUNT },
      "198.51.100.4",
    );
  }
  await assert.rejects(
    server.accounts.register(
      { username: "user-30", secret: SECRET, ...TEST_ACCOUNT },
      "198.51.100.4",
    ),
    (err) => err instanceof UserError && err.code === "rate_limited",
  );
  assert.equal(server.ring.accounts.has("user-30"), false, "nothing was stored");
  // Another address is not affected; after two seconds one more is allowed (30 per minute).
  await server.accounts.register(
    { username: "other", secret: SECRET, ...TEST_ACCOUNT },
    "198.51.100.5",
  );
  await server.clock.advance(2000);
  await server.accounts.register(
    { username: "user-30", secret: SECRET, ...TEST_ACCOUNT },
    "198.51.100.4",
  );
  await server.stop();
});

Deno.test("sessions: the newest session is on the ring: a server that never heard of the newer login refuses the replaced token", async () => {
  const a = fakeServer({ self: "http://node-a:8000", sessions: { handoverGraceMs: 0 } });
  await registered(a);
  const first = new FakeConnection(a.clock);
  a.sessions.connect(first);
  const replaced = await a.sessions.login(first, "alice", SECRET);
  await a.clock.advance(1);
  const second = new FakeConnection(a.clock);
  a.sessions.connect(second);
  const current = await a.sessions.login(second, "alice", SECRET);
  // b (just restarted: an empty memory, no notice heard) shares only the ring with a.
  const b = fakeServer({ self: "http://node-b:8000", ring: a.ring, clock: a.clock });
  const conn = new FakeConnection(a.clock);
  b.sessions.connect(conn);
  await assert.rejects(
    b.sessions.resume(conn, replaced.token),
    (err) => err instanceof UserError && err.message === SUPERSEDED_MESSAGE,
  );
  // A logout on a is on the ring too: b refuses the signed-out token.
  await a.sessions.logout(second);
  assert.equal(a.ring.accounts.get("alice")!.session?.ended, true);
  await assert.rejects(
    b.sessions.resume(conn, current.token),
    (err) => err instanceof UserError && /signed out/.test(err.message),
  );
  await Promise.all([a.stop(), b.stop()]);
});

Deno.test("sessions: a refresh token is used once, and one used twice ends the session; access tokens are short and never refresh", async () => {
  const server = fakeServer();
  await registered(server);
  const conn = new FakeConnection(server.clock);
  server.sessions.connect(conn);
  const login = await server.sessions.login(conn, "alice", SECRET);
  assert.ok(login.keys?.wrapped, "a password login carries the wrapped keys");
  assert.equal(login.expiresAt - server.clock.now(), 3_600_000, "an access token lasts an hour");
  const other = new FakeConnection(server.clock);
  server.sessions.connect(other);
  await assert.rejects(
    server.sessions.refresh(other, login.token),
    (err) => err instanceof UserError && err.code === "not_authenticated",
  );
  await assert.rejects(
    server.sessions.resume(other, login.refreshToken!),
    (err) => err instanceof UserError && err.code === "not_authenticated",
  );
  await server.clock.advance(3_600_001);
  await assert.rejects(
    server.sessions.resume(other, login.token),
    (err) => err instanceof UserError && err.code === "session_expired",
  );
  const refreshed = await server.sessions.refresh(other, login.refreshToken!);
  assert.equal(refreshed.keys, undefined, "no wrapped keys");
  assert.ok(refreshed.publicKeys, "the public keys, to check the device's own");
  assert.equal(server.sessions.userOf(other), "alice", "the refresh bound the connection");
  const resumed = await server.sessions.resume(new FakeConnection(server.clock), refreshed.token);
  assert.equal(resumed.keys, undefined, "a resume never carries the wrapped keys");
  assert.equal(resumed.refreshToken, undefined);
  // The used refresh token comes back (a copy of it): the session ends, for every token of it.
  await assert.rejects(
    server.sessions.refresh(other, login.refreshToken!),
    (err) => err instanceof UserError && /used twice/.test(err.message),
  );
  assert.equal(server.ring.accounts.get("alice")!.session?.ended, true);
  await assert.rejects(
    server.sessions.refresh(new FakeConnection(server.clock), refreshed.refreshToken!),
    (err) => err instanceof UserError && err.code === "not_authenticated",
  );
  await assert.rejects(
    server.sessions.resume(new FakeConnection(server.clock), refreshed.token),
    (err) => err instanceof UserError && /signed out/.test(err.message),
  );
  await server.stop();
});

Deno.test("sessions: a login of a legacy account asks for a rekey; 'rekey' needs a session", async () => {
  const server = fakeServer();
  await registered(server);
  const { salt: _salt, ...legacy } = server.ring.accounts.get("alice")!;
  server.ring.accounts.set("alice", legacy);
  const stranger = new FakeConnection(server.clock);
  server.sessions.connect(stranger);
  const rekey = { salt: "b".repeat(22), secret: "n".repeat(43), wrapped: "x".repeat(40) };
  await assert.rejects(
    server.sessions.rekey(stranger, rekey),
    (err) => err instanceof UserError && err.code === "not_authenticated",
  );
  const conn = new FakeConnection(server.clock);
  server.sessions.connect(conn);
  assert.equal((await server.sessions.login(conn, "alice", SECRET)).rekey, true);
  await server.sessions.rekey(conn, rekey);
  await server.clock.advance(1);
  const again = await server.sessions.login(conn, "alice", rekey.secret);
  assert.equal(again.rekey, undefined, "moved");
  assert.equal(again.keys?.wrapped, rekey.wrapped);
  await server.stop();
});
