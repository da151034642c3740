/**
 * Deferred hand-over claims against a real server process, over real WebSockets: a connection
 * that is not logged in asks for a challenge and claims the hand-over of an old session with the
 * user's signature. Every bad claim gets a typed error frame and leaves the connection as it was;
 * the genuine one is admitted into the hand-over grace, where it reaches the user's current
 * session and nothing else.
 */
import assert from "node:assert/strict";
import { startCluster, waitFor } from "../support/server_process.ts";
import { TEST_ACCOUNT, TestClient } from "../support/ws_client.ts";
import type { ServerFrame } from "../../shared/mod.ts";
import { exportPublicKey, signHandoverClaim } from "../../shared/crypto/mod.ts";
import { testKeys } from "../../shared/crypto/test_keys.ts";

const SECRET = "s".repeat(43);

function errorCode(frame: ServerFrame): string {
  assert.equal(frame.type, "error", `expected an error, got ${JSON.stringify(frame)}`);
  return (frame as { code: string }).code;
}

async function challengeOf(client: TestClient): Promise<string> {
  const f = await client.request({ type: "handover_challenge" });
  assert.equal(f.type, "handover_challenge", JSON.stringify(f));
  return (f as { challenge: string }).challenge;
}

Deno.test("handover claims over the wire: typed refusals, then the genuine claim is admitted", async () => {
  const keys = await testKeys();
  const [server] = await startCluster(1);
  const clients: TestClient[] = [];
  try {
    const connect = async () => {
      const c = await TestClient.connect(server!.url);
      clients.push(c);
      return c;
    };
    // alice registers with her keys and logs in on an old device, which then goes away.
    const old = await connect();
    const registered = await old.request({
      type: "register",
      username: "alice",
      secret: SECRET,
      salt: TEST_ACCOUNT.salt,
      keys: {
        encryption: await exportPublicKey(keys.alice.encryption.publicKey),
        signing: await exportPublicKey(keys.alice.signing.publicKey),
        wrapped: "w".repeat(32),
      },
    });
    assert.equal(registered.type, "ok", JSON.stringify(registered));
    const oldToken = (await old.login("alice", SECRET, false)).token;
    await old.close();
    const fresh = await connect();
    const current = await fresh.login("alice", SECRET, false);

    const back = await connect();
    const claim = async (token: string, key: CryptoKey, challenge?: string) => {
      const c = challenge ?? await challengeOf(back);
      return back.request({
        type: "handover_claim",
        claim: 1,
        token,
        challenge: c,
        signature: await signHandoverClaim("alice", token, c, key),
      });
    };
    const alice = keys.alice.signing.privateKey;
    assert.equal(
      errorCode(await claim(oldToken, alice, "c".repeat(43))),
      "not_authenticated",
      "a challenge the server never gave",
    );
    assert.equal(
      errorCode(await claim(oldToken, keys.eve.signing.privateKey)),
      "not_authenticated",
      "signed with another key",
    );
    assert.equal(
      errorCode(await claim(current.token, alice)),
      "not_superseded",
      "the current session's token",
    );
    back.sendRaw(JSON.stringify({ v: 1, type: "handover_claim", reqId: 99, claim: 2 }));
    assert.equal(
      errorCode(await back.next((f) => f.type === "error" && f.reqId === 99)),
      "unsupported_version",
    );
    back.sendRaw('{"v":1,"type":"handover_claim","reqId":98,"claim":1,"token":"!"}');
    assert.equal(
      errorCode(await back.next((f) => f.type === "error" && f.reqId === 98)),
      "bad_frame",
    );
    // Nothing changed: still not logged in, not in a grace.
    assert.equal(
      errorCode(await back.request({ type: "watch", usernames: ["bob"] })),
      "not_authenticated",
    );

    // The genuine claim: admitted into the hand-over grace.
    const admitted = await claim(oldToken, alice);
    assert.equal(admitted.type, "handover_admitted", JSON.stringify(admitted));
    back.send({ type: "signal", to: "alice", data: { type: "offer", sdp: "x", lid: "l1" } });
    const got = await fresh.next((f) => f.type === "signal" && f.from === "alice");
    assert.equal(got.type === "signal" && got.data.lid, "l1");
    const refused = await back.request({ type: "watch", usernames: ["bob"] });
    assert.equal(errorCode(refused), "not_authenticated");
    assert.match((refused as { message: string }).message, /only hand your history/);
    // A second claim on an admitted connection is refused too.
    assert.equal(
      errorCode(await back.request({ type: "handover_challenge" })),
      "not_authenticated",
    );
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await server!.stop();
  }
});

Deno.test("a logout ends the session on every server: the next login elsewhere hears the device signed out, and its token is refused", async () => {
  const servers = await startCluster(2);
  const clients: TestClient[] = [];
  try {
    const connect = async (url: string) => {
      const c = await TestClient.connect(url);
      clients.push(c);
      return c;
    };
    const laptop = await connect(servers[0]!.url);
    const { token } = await laptop.login("alice", SECRET);
    const bye = await laptop.request({ type: "logout" });
    assert.equal(bye.type, "ok", JSON.stringify(bye));
    await laptop.close();
    // On the other server, once the notice arrived: the old token is dead, and a new login is
    // told the device signed out (not that its history will arrive).
    // (A fresh connection per try: a resume that still succeeds binds its connection.)
    let refused: ServerFrame | undefined;
    await waitFor("the other server to refuse the signed-out token", async () => {
      const probe = await connect(servers[1]!.url);
      refused = await probe.request({ type: "resume", token });
      await probe.close();
      return refused.type === "error";
    }, 20_000);
    const phone = await connect(servers[1]!.url);
    assert.equal(errorCode(refused!), "not_authenticated");
    assert.match((refused as { message: string }).message, /signed out/);
    const session = await phone.login("alice", SECRET, false);
    assert.equal(session.handover, "signed_out");
    // A logout needs a session; nothing changes for a connection without one.
    const stranger = await connect(servers[1]!.url);
    assert.equal(errorCode(await stranger.request({ type: "logout" })), "not_authenticated");
    const still = await connect(servers[1]!.url);
    assert.equal((await still.request({ type: "resume", token: session.token })).type, "session");
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await Promise.all(servers.map((s) => s.stop()));
  }
});
