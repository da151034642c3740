/**
 * Deferred hand-over claims (`Sessions.claimHandover`): a device whose session was replaced while
 * it was offline comes back with its old token and the user's signature over a fresh challenge.
 * Only a genuine claim of a superseded session, signed with the account's key, while the new
 * session is online, enters the hand-over grace; every other claim is a typed refusal that
 * changes nothing.
 */
import assert from "node:assert/strict";
import { parseClientFrame, ProtocolError } from "../../shared/mod.ts";
import { exportPublicKey, signHandoverClaim, type UserKeyPairs } from "../../shared/crypto/mod.ts";
import { testKeys } from "../../shared/crypto/test_keys.ts";
import { FakeConnection, type FakeServer, fakeServer, TEST_ACCOUNT } from "./testing.ts";
import { UserError } from "./errors.ts";
import { HANDOVER_PROGRESS_SIGNAL } from "./sessions.ts";
import { TokenError, Tokens } from "./tokens.ts";
import { Hmac } from "../cluster/mod.ts";

const SECRET = "a".repeat(43);

async function registerWithKeys(server: FakeServer, username: string, pairs: UserKeyPairs) {
  await server.accounts.register({
    username,
    secret: SECRET,
    salt: TEST_ACCOUNT.salt,
    keys: {
      encryption: await exportPublicKey(pairs.encryption.publicKey),
      signing: await exportPublicKey(pairs.signing.publicKey),
      wrapped: "w".repeat(32),
    },
  });
}

/** alice logged in on `old`, whose device went offline; then she logged in on `fresh`. */
async function supersededWhileOffline() {
  const keys = await testKeys();
  const server = fakeServer({ sessions: { handoverGraceMs: 20_000, handoverMaxMs: 60_000 } });
  server.start();
  await registerWithKeys(server, "alice", keys.alice);
  await registerWithKeys(server, "bob", keys.bob);
  const old = new FakeConnection(server.clock);
  server.sessions.connect(old);
  const oldGrant = await server.sessions.login(old, "alice", SECRET);
  assert.equal(oldGrant.handover, undefined, "no earlier session: nothing deferred");
  server.sessions.disconnect(old);
  await server.clock.advance(1);
  const fresh = new FakeConnection(server.clock);
  server.sessions.connect(fresh);
  const grant = await server.sessions.login(fresh, "alice", SECRET);
  return { server, keys, oldToken: oldGrant.token, grant, fresh };
}

/** A new connection that asked for a challenge and signs a claim of `token` with `key`. */
async function claim(server: FakeServer, username: string, token: string, key: CryptoKey) {
  const conn = new FakeConnection(server.clock);
  server.sessions.connect(conn);
  const challenge = server.sessions.handoverChallenge(conn);
  const signature = await signHandoverClaim(username, token, challenge, key);
  const frame = parseClientFrame(JSON.stringify({
    v: 1,
    type: "handover_claim",
    reqId: 1,
    claim: 1,
    token,
    challenge,
    signature,
  }));
  assert.equal(frame.type, "handover_claim");
  return {
    conn,
    result: server.sessions.claimHandover(conn, frame as Extract<typeof frame, { claim: 1 }>),
  };
}

function refusedWith(code: string) {
  return (err: unknown) => err instanceof UserError && err.code === code;
}

Deno.test("handover claim: a login while the old device is offline is told the hand-over is deferred", async () => {
  const { server, grant } = await supersededWhileOffline();
  assert.equal(grant.handover, "deferred");
  await server.stop();
});

Deno.test("handover claim: a login while the old device is online is not deferred", async () => {
  const keys = await testKeys();
  const server = fakeServer({ sessions: { handoverGraceMs: 20_000 } });
  server.start();
  await registerWithKeys(server, "alice", keys.alice);
  const [a, b] = [new FakeConnection(server.clock), new FakeConnection(server.clock)];
  server.sessions.connect(a);
  server.sessions.connect(b);
  await server.sessions.login(a, "alice", SECRET);
  await server.clock.advance(1);
  assert.equal((await server.sessions.login(b, "alice", SECRET)).handover, undefined);
  await server.stop();
});

Deno.test("handover claim: the old device signs the challenge and enters a hand-over grace toward the new session", async () => {
  const { server, keys, oldToken, fresh } = await supersededWhileOffline();
  const { conn, result } = await claim(server, "alice", oldToken, keys.alice.signing.privateKey);
  assert.equal(await result, 20_000);
  assert.equal(server.sessions.graceUserOf(conn), "alice");
  assert.equal(server.sessions.userOf(conn), undefined, "it does not become a session");
  assert.equal(server.local.connectionOf("alice"), fresh, "the new session stays current");
  // Its signals reach the new session, as from a device superseded while online.
  await server.sessions.signalOwnDevice(conn, { type: "offer", sdp: "x", lid: "l1" });
  assert.deepEqual(fresh.framesOf("signal").map((f) => [f.from, f.data.lid]), [["alice", "l1"]]);
  // Progress extends its grace like any other, up to the bound (60 s).
  for (let t = 1; t <= 3; t++) {
    await server.clock.advance(15_000);
    conn.touch();
    fresh.touch();
    await server.sessions.signalOwnDevice(conn, { type: HANDOVER_PROGRESS_SIGNAL, done: t * 100 });
  }
  assert.equal(conn.closed, undefined, "still open at 45 s, past its 20 s grace, by progress");
  await server.clock.advance(10_000);
  conn.touch();
  fresh.touch();
  await server.sessions.signalOwnDevice(conn, { type: HANDOVER_PROGRESS_SIGNAL, done: 400 });
  await server.clock.advance(6_000);
  assert.equal(conn.closeCode(), 4001, "closed at the bound");
  await server.stop();
});

Deno.test("handover claim: the token may be expired, never forged", async () => {
  const tokens = new Tokens(new Hmac("a-test-cluster-secret-of-some-length"), 1_000);
  const { token } = await tokens.issue("alice", 0);
  await assert.rejects(
    tokens.verify(token, 5_000),
    (err) => err instanceof TokenError && err.code === "session_expired",
  );
  assert.equal((await tokens.verify(token, 5_000, { allowExpired: true })).username, "alice");
  await assert.rejects(
    tokens.verify(`${token.split(".")[0]}.${"B".repeat(43)}`, 5_000, { allowExpired: true }),
    (err) => err instanceof TokenError && err.code === "not_authenticated",
  );
});

Deno.test("handover claim: refusals are typed and change nothing", async () => {
  const { server, keys, oldToken, grant, fresh } = await supersededWhileOffline();
  const before = server.local.connections().length;
  const check = async (what: string, code: string, run: () => Promise<unknown>) => {
    await assert.rejects(run(), refusedWith(code), what);
    assert.equal(server.local.connectionOf("alice"), fresh, `${what}: session unchanged`);
    assert.equal(server.local.graces().length, 0, `${what}: no grace began`);
  };
  // Signed with another user's key.
  await check(
    "wrong signature",
    "not_authenticated",
    async () => (await claim(server, "alice", oldToken, keys.eve.signing.privateKey)).result,
  );
  // bob's token, signed by alice: the signature is checked with bob's key.
  const bobConn = new FakeConnection(server.clock);
  server.sessions.connect(bobConn);
  const bobToken = (await server.sessions.login(bobConn, "bob", SECRET)).token;
  await check(
    "another user's token",
    "not_authenticated",
    async () => (await claim(server, "alice", bobToken, keys.alice.signing.privateKey)).result,
  );
  // The current session's own token, properly signed: it was replaced by nothing.
  await check(
    "current session",
    "not_superseded",
    async () => (await claim(server, "alice", grant.token, keys.alice.signing.privateKey)).result,
  );
  // A forged token.
  const [payload] = oldToken.split(".");
  await check(
    "forged token",
    "not_authenticated",
    async () =>
      (await claim(server, "alice", `${payload}.${"A".repeat(43)}`, keys.alice.signing.privateKey))
        .result,
  );
  // No challenge asked, or one used twice.
  const conn = new FakeConnection(server.clock);
  server.sessions.connect(conn);
  const challenge = server.sessions.handoverChallenge(conn);
  const signature = await signHandoverClaim(
    "alice",
    oldToken,
    challenge,
    keys.alice.signing.privateKey,
  );
  const frame = {
    v: 1 as const,
    type: "handover_claim" as const,
    reqId: 2,
    claim: 1 as const,
    token: oldToken,
    challenge,
    signature,
  };
  await check(
    "stale challenge",
    "not_authenticated",
    async () => {
      for (let t = 0; t < 13; t++) {
        fresh.touch();
        bobConn.touch();
        await server.clock.advance(5_000);
      }
      return server.sessions.claimHandover(conn, frame);
    },
  );
  await check(
    "challenge used twice",
    "not_authenticated",
    () => server.sessions.claimHandover(conn, frame),
  );
  // A logged-in connection cannot claim.
  const challenge2 = server.sessions.handoverChallenge(bobConn);
  await check(
    "logged-in connection",
    "not_authenticated",
    async () =>
      server.sessions.claimHandover(bobConn, {
        ...frame,
        challenge: challenge2,
        signature: await signHandoverClaim(
          "alice",
          oldToken,
          challenge2,
          keys.alice.signing.privateKey,
        ),
      }),
  );
  assert.ok(server.local.connections().length >= before);
  await server.stop();
});

Deno.test("handover claim: while the new session is offline the claim waits, then it is admitted", async () => {
  const { server, keys, oldToken, fresh } = await supersededWhileOffline();
  server.sessions.disconnect(fresh);
  const first = await claim(server, "alice", oldToken, keys.alice.signing.privateKey);
  await assert.rejects(first.result, refusedWith("peer_offline"));
  assert.equal(server.sessions.graceUserOf(first.conn), undefined);
  // The new device resumes its session; the old one claims again and is admitted.
  await server.clock.advance(1);
  const back = new FakeConnection(server.clock);
  server.sessions.connect(back);
  const grant = await server.sessions.login(back, "alice", SECRET);
  assert.equal(grant.handover, "deferred", "the old device is still away");
  const second = await claim(server, "alice", oldToken, keys.alice.signing.privateKey);
  assert.equal(await second.result, 20_000);
  await server.stop();
});

Deno.test("handover claim frames: garbage is a typed error", () => {
  const bad = [
    {
      v: 1,
      type: "handover_claim",
      reqId: 1,
      claim: 1,
      token: "x",
      challenge: "y",
      signature: "z",
    },
    { v: 1, type: "handover_claim", reqId: 1, claim: 2, token: "a".repeat(20), challenge: "c" },
    { v: 1, type: "handover_claim", reqId: 1 },
    { v: 2, type: "handover_challenge", reqId: 1 },
    {
      v: 1,
      type: "handover_claim",
      reqId: 1,
      claim: 1,
      token: "a".repeat(20),
      challenge: "c".repeat(43),
      signature: "!".repeat(40),
    },
  ];
  for (const frame of bad) {
    assert.throws(() => parseClientFrame(JSON.stringify(frame)), ProtocolError);
  }
  const claimV2 = bad[1]!;
  assert.throws(
    () => parseClientFrame(JSON.stringify(claimV2)),
    (err) => err instanceof ProtocolError && err.code === "unsupported_version",
  );
  assert.deepEqual(parseClientFrame('{"v":1,"type":"handover_challenge","reqId":7}'), {
    v: 1,
    type: "handover_challenge",
    reqId: 7,
  });
});

Deno.test("handover claim: after a logout the next login is told the device signed out, and its token is dead", async () => {
  const keys = await testKeys();
  const server = fakeServer({ sessions: { handoverGraceMs: 20_000 } });
  server.start();
  await registerWithKeys(server, "alice", keys.alice);
  const old = new FakeConnection(server.clock);
  server.sessions.connect(old);
  const { token } = await server.sessions.login(old, "alice", SECRET);
  await server.sessions.logout(old);
  assert.equal(server.sessions.userOf(old), undefined, "the connection carries no session");
  // Reusing the signed-out token (stolen, or a stale tab) is refused and says why.
  const stale = new FakeConnection(server.clock);
  server.sessions.connect(stale);
  await assert.rejects(
    server.sessions.resume(stale, token),
    (err) =>
      err instanceof UserError && err.code === "not_authenticated" &&
      /signed out/.test(err.message),
  );
  await server.clock.advance(1);
  const fresh = new FakeConnection(server.clock);
  server.sessions.connect(fresh);
  const grant = await server.sessions.login(fresh, "alice", SECRET);
  assert.equal(grant.handover, "signed_out", "no hand-over is owed by a device that signed out");
  // The one after that is a plain login: the signed-out session is no longer the newest.
  server.sessions.disconnect(fresh);
  await server.clock.advance(1);
  const third = new FakeConnection(server.clock);
  server.sessions.connect(third);
  assert.equal((await server.sessions.login(third, "alice", SECRET)).handover, "deferred");
  await server.stop();
});

Deno.test("handover claim: a logout heard from another server ends the session there too", async () => {
  const keys = await testKeys();
  const server = fakeServer({ sessions: { handoverGraceMs: 20_000 } });
  server.start();
  await registerWithKeys(server, "alice", keys.alice);
  const conn = new FakeConnection(server.clock);
  server.sessions.connect(conn);
  const { token } = await server.sessions.login(conn, "alice", SECRET);
  // The login and the logout were on another server: this one hears both notices. (The fake
  // server's tokens are signed with this secret; see testing.ts.)
  const tokens = new Tokens(new Hmac("a-test-cluster-secret-of-some-length"), 7 * 86_400_000);
  const { sessionId, issuedAt } = await tokens.verify(token, server.clock.now());
  const stamp = { sessionId, issuedAt };
  server.sessions.disconnect(conn);
  assert.equal(server.sessions.receive("alice", { v: 1, type: "session_ended", ...stamp }), true);
  const again = new FakeConnection(server.clock);
  server.sessions.connect(again);
  await assert.rejects(
    server.sessions.resume(again, token),
    (err) => err instanceof UserError && /signed out/.test(err.message),
  );
  await server.clock.advance(1);
  assert.equal((await server.sessions.login(again, "alice", SECRET)).handover, "signed_out");
  // A client may not send the cluster-internal notice, nor a logout without a session.
  assert.throws(
    () => parseClientFrame(JSON.stringify({ v: 1, type: "session_ended", ...stamp })),
    ProtocolError,
  );
  const stranger = new FakeConnection(server.clock);
  server.sessions.connect(stranger);
  await assert.rejects(server.sessions.logout(stranger), refusedWith("not_authenticated"));
  await server.stop();
});
