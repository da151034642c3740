/**
 * Real server processes on loopback: accounts (ring records on K+1 servers), presence and
 * signaling across servers, typed errors for bad input, and survival of a kill -9.
 */
import assert from "node:assert/strict";
import { PRESENCE_TIMEOUT_MS } from "../../shared/mod.ts";
import { accountCopies, presenceHolders, waitForCorrectRing } from "../support/ring.ts";
import {
  type ServerProcess,
  startCluster,
  startServer,
  waitFor,
} from "../support/server_process.ts";
import { TEST_ACCOUNT, TestClient } from "../support/ws_client.ts";

const PASSWORD = "correct horse battery";

async function metric(url: string, series: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line ? Number(line.split(" ")[1]) : 0;
}

Deno.test("users on different servers see each other online and exchange signals", async () => {
  const servers = await startCluster(3);
  const clients: TestClient[] = [];
  try {
    const [s1, s2, s3] = servers.map((s) => s.url) as [string, string, string];
    const alice = await TestClient.connect(s1);
    const bob = await TestClient.connect(s2);
    const eve = await TestClient.connect(s3);
    clients.push(alice, bob, eve);
    await alice.login("alice", PASSWORD);
    const before = await alice.request({ type: "watch", usernames: ["bob"] });
    assert.deepEqual(before.type === "presence_list" && before.users, [{
      username: "bob",
      online: false,
    }]);
    await bob.login("bob", PASSWORD);

    // alice learns that bob, whom she watches, came online on another server.
    await alice.next((f) => f.type === "presence" && f.username === "bob" && f.online);
    const contacts = await alice.request({ type: "watch", usernames: ["bob"] });
    assert.deepEqual(contacts.type === "presence_list" && contacts.users, [{
      username: "bob",
      online: true,
    }]);

    // A signal goes alice → s1 → s2 → bob, stamped with the authenticated sender.
    alice.send({ type: "signal", to: "bob", data: { type: "offer", sdp: "v=0" } });
    const signal = await bob.next((f) => f.type === "signal");
    assert.deepEqual(signal, {
      v: 1,
      type: "signal",
      from: "alice",
      data: { type: "offer", sdp: "v=0" },
    });
    bob.send({ type: "relay", to: "alice", payload: "hello alice" });
    const relay = await alice.next((f) => f.type === "relay");
    assert.deepEqual(relay, { v: 1, type: "relay", from: "bob", payload: "hello alice" });

    // Clear errors: a name taken on another server (by someone with another password: the same
    // one is a retry of alice's own registration), a wrong password, an invalid name.
    const taken = await eve.request({
      type: "register",
      username: "alice",
      secret: "not alice's password",
      ...TEST_ACCOUNT,
    });
    assert.equal(taken.type === "error" && taken.code, "username_taken");
    const wrong = await eve.request({
      type: "login",
      username: "alice",
      secret: "not the password",
    });
    assert.equal(wrong.type === "error" && wrong.code, "wrong_credentials");
    const invalid = await eve.request({
      type: "register",
      username: "a b",
      secret: PASSWORD,
      ...TEST_ACCOUNT,
    });
    assert.equal(invalid.type === "error" && invalid.code, "invalid_username");
    assert.match(invalid.type === "error" ? invalid.message : "", /3–32 letters/);

    // Before login, eve cannot signal anyone.
    const anon = await eve.request({ type: "watch", usernames: ["alice"] });
    assert.equal(anon.type === "error" && anon.code, "not_authenticated");
    // Signaling an offline user says so.
    await eve.login("eve", PASSWORD);
    eve.send({ type: "signal", to: "nobody", data: { type: "offer" } });
    const offline = await eve.next((f) => f.type === "error");
    assert.equal(offline.type === "error" && offline.code, "peer_offline");
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});

Deno.test("malformed frames get typed errors, are counted, and the server keeps serving", async () => {
  const servers = await startCluster(1);
  const client = await TestClient.connect(servers[0]!.url);
  try {
    const url = servers[0]!.url;
    const cases: [string, string][] = [
      ["\u0000\u00ff garbage", "bad_json"],
      ["[1,2,3]", "bad_frame"],
      [JSON.stringify({ v: 2, type: "ping", reqId: 1 }), "unsupported_version"],
      [JSON.stringify({ v: 1, type: "launch_missiles" }), "unknown_type"],
      [JSON.stringify({ v: 1, type: "ping", reqId: "one" }), "bad_frame"],
      [JSON.stringify({ v: 1, type: "login", reqId: 1, username: "bob" }), "invalid_secret"],
      [
        JSON.stringify({ v: 1, type: "relay", to: "bob", payload: "x".repeat(70_000) }),
        "frame_too_large",
      ],
    ];
    for (const [text, code] of cases) {
      client.sendRaw(text);
      const reply = await client.next((f) => f.type === "error");
      assert.equal(reply.type === "error" && reply.code, code, `for ${text.slice(0, 60)}`);
    }
    assert.equal(await metric(url, 'p2pchat_invalid_frames_total{source="client"}'), cases.length);
    const pong = await client.request({ type: "ping" });
    assert.equal(pong.type, "pong");
  } finally {
    await client.close();
    await Promise.all(servers.map((s) => s.stop()));
  }
});

Deno.test("after kill -9 of one server the other two keep serving and their users keep chatting", async () => {
  const servers = await startCluster(3);
  const clients: TestClient[] = [];
  try {
    const [s1, s2, s3] = servers as [typeof servers[0], typeof servers[0], typeof servers[0]];
    const alice = await TestClient.connect(s1.url);
    const bob = await TestClient.connect(s2.url);
    const carol = await TestClient.connect(s3.url);
    clients.push(alice, bob);
    await alice.login("alice", PASSWORD);
    assert.equal(
      (await alice.request({ type: "watch", usernames: ["carol"] })).type,
      "presence_list",
    );
    await bob.login("bob", PASSWORD);
    await carol.login("carol", PASSWORD);
    await alice.next((f) => f.type === "presence" && f.username === "carol" && f.online);

    await s3.stop("SIGKILL");

    // carol's server died: her friends see her go offline.
    await alice.next((f) => f.type === "presence" && f.username === "carol" && !f.online, 30_000);
    await waitFor("survivors to drop the dead server", async () => {
      const health = await (await fetch(`${s1.url}/healthz`)).json();
      return health.servers.length === 2;
    });
    for (let i = 0; i < 5; i++) {
      alice.send({ type: "relay", to: "bob", payload: `msg ${i}` });
      const got = await bob.next((f) => f.type === "relay");
      assert.equal(got.type === "relay" && got.payload, `msg ${i}`);
    }
    bob.send({ type: "signal", to: "alice", data: { type: "answer", sdp: "v=0" } });
    await alice.next((f) => f.type === "signal" && f.from === "bob");
    // New accounts can still be created and used on the survivors.
    const dave = await TestClient.connect(s2.url);
    clients.push(dave);
    await dave.login("dave", PASSWORD);
    const late = await TestClient.connect(s1.url);
    clients.push(late);
    await late.login("dave", PASSWORD, false);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});

Deno.test("accounts are ring records on K+1 servers, readable everywhere, re-copied after a crash", async () => {
  const K = 2;
  const servers = await startCluster(5);
  const clients: TestClient[] = [];
  const users = ["amy", "ben", "cat", "dan", "eva", "fay", "gus", "hal"];
  try {
    await waitForCorrectRing(servers, "5 servers to form one ring");
    const registrar = await TestClient.connect(servers[0]!.url);
    clients.push(registrar);
    for (const u of users) {
      const res = await registrar.request({
        type: "register",
        username: u,
        secret: PASSWORD,
        ...TEST_ACCOUNT,
      });
      assert.equal(res.type, "ok", `register ${u}: ${JSON.stringify(res)}`);
    }
    // Each account lives on its primary and K successors, not on every server.
    await waitFor("every account to have exactly K+1 copies", () => {
      const copies = accountCopies(servers);
      return users.every((u) => copies.get(u) === K + 1);
    }, 40_000);
    // A second registration of a name is refused through any server.
    const other = await TestClient.connect(servers[3]!.url);
    clients.push(other);
    const taken = await other.request({
      type: "register",
      username: "cat",
      secret: "other pw",
      ...TEST_ACCOUNT,
    });
    assert.equal(taken.type === "error" && taken.code, "username_taken");
    // kill -9 of one server: every account still logs in through every other server, and the
    // ring brings each back to K+1 copies among the survivors.
    await servers[2]!.stop("SIGKILL");
    const live = servers.filter((_, i) => i !== 2);
    await waitForCorrectRing(live, "the ring to repair after the crash");
    for (const [i, u] of users.entries()) {
      const c = await TestClient.connect(live[i % live.length]!.url);
      clients.push(c);
      await c.login(u, PASSWORD, false);
    }
    await waitFor("K+1 copies of every account among the survivors", () => {
      const copies = accountCopies(live);
      return users.every((u) => (copies.get(u) ?? 0) >= K + 1);
    }, 40_000);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});

Deno.test("presence is a ring record with a time to live on K+1 servers, read when a cache is cold", async () => {
  const K = 2;
  const servers = await startCluster(5);
  const clients: TestClient[] = [];
  const restarted: ServerProcess[] = [];
  try {
    await waitForCorrectRing(servers, "5 servers to form one ring");
    const alice = await TestClient.connect(servers[0]!.url);
    clients.push(alice);
    await alice.login("alice", PASSWORD);
    await waitFor(
      "alice's presence record on K+1 servers",
      () => presenceHolders(servers, "alice").length === K + 1,
    );
    // A server that just restarted knows nothing of alice's session: a signal to her is routed
    // by her presence record on the ring, not by a cache.
    const s4 = servers[4]!;
    await s4.stop();
    const fresh = await startServer({
      port: Number(new URL(s4.url).port),
      dataDir: s4.dataDir,
      peers: [servers[0]!.url],
    });
    restarted.push(fresh);
    await waitForCorrectRing([...servers.slice(0, 4), fresh], "the restarted server to rejoin");
    const bob = await TestClient.connect(fresh.url);
    clients.push(bob);
    await bob.login("bob", PASSWORD);
    bob.send({ type: "signal", to: "alice", data: { type: "offer", sdp: "v=0" } });
    const signal = await alice.next((f) => f.type === "signal");
    assert.equal(signal.type === "signal" && signal.from, "bob");
    // The restarted server learned alice's home from her record: bob, watching her, sees her on.
    const watched = await bob.request({ type: "watch", usernames: ["alice"] });
    assert.deepEqual(watched.type === "presence_list" && watched.users, [
      { username: "alice", online: true },
    ]);
    // alice logs out: her record turns offline on the ring, and bob is told.
    await alice.close();
    await bob.next((f) => f.type === "presence" && f.username === "alice" && !f.online, 30_000);
    // The replica set gets the offline write at once; a server that held a copy before the
    // restart moved the replica sets keeps a stale one until its time to live (15 s) runs out.
    await waitFor(
      "no online presence record of alice on any server",
      () => presenceHolders([...servers.slice(0, 4), fresh], "alice").length === 0,
      PRESENCE_TIMEOUT_MS + 15_000,
    );
    bob.send({ type: "signal", to: "alice", data: { type: "offer" } });
    const offline = await bob.next((f) => f.type === "error");
    assert.equal(offline.type === "error" && offline.code, "peer_offline");
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([...servers, ...restarted].map((s) => s.stop()));
  }
});

Deno.test("keys registered on one server are returned at login and by get_keys on another", async () => {
  const servers = await startCluster(3);
  const clients: TestClient[] = [];
  try {
    const keys = {
      encryption: "E".repeat(560),
      signing: "S".repeat(560),
      wrapped: JSON.stringify({ sealed: "w".repeat(64) }),
    };
    const alice = await TestClient.connect(servers[0]!.url);
    clients.push(alice);
    const reg = await alice.request({
      type: "register",
      username: "alice",
      secret: PASSWORD,
      salt: TEST_ACCOUNT.salt,
      keys,
    });
    assert.equal(reg.type, "ok");
    // A new device on another server receives the wrapped private keys with its session.
    const device = await TestClient.connect(servers[2]!.url);
    clients.push(device);
    const session = await device.login("alice", PASSWORD, false);
    assert.deepEqual(session.type === "session" && session.keys, keys);
    // Another user gets alice's public keys, never the wrapped private ones.
    const bob = await TestClient.connect(servers[1]!.url);
    clients.push(bob);
    await bob.login("bob", PASSWORD);
    const got = await bob.request({ type: "get_keys", username: "alice" });
    assert.deepEqual(got, {
      v: 1,
      type: "keys",
      reqId: (got as { reqId: number }).reqId,
      username: "alice",
      encryption: keys.encryption,
      signing: keys.signing,
    });
    const none = await bob.request({ type: "get_keys", username: "nobody" });
    assert.equal(none.type === "error" && none.code, "unknown_user");
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});
