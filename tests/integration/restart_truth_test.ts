/**
 * Servers restarted from old or empty disks tell the truth while they catch up (issue #16), with
 * real server processes and their SQLite files (5 servers, K = 2, W = 2):
 * - two restarted servers holding the same stale copy of a message acknowledged while they were
 *   down do not vouch for each other: the message is not handed out again while the servers
 *   holding its tombstone are frozen, nor after;
 * - a server restarted from a disk older than an account does not refuse a right password
 *   (`wrong_credentials`) or that recipient (`unknown_user`) because it has not got the account
 *   back: until the servers that hold it answer, the answer is `unavailable` (retried), then
 *   success.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { userRingKey } from "../../server/store/mod.ts";
import { accountCopies, mailboxCopies, ringView, waitForCorrectRing } from "../support/ring.ts";
import {
  type ServerProcess,
  startCluster,
  startServer,
  tempDataDir,
  waitFor,
} from "../support/server_process.ts";
import { TEST_ACCOUNT, TestClient } from "../support/ws_client.ts";

const PASSWORD = "correct horse battery";
const LIMITS = {
  P2P_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE: "1000",
  P2P_REGISTRATIONS_PER_MINUTE: "1000",
};

/** The servers in ring order starting with `user`'s primary: its replica set is the first 3. */
async function ringOrderFor(servers: ServerProcess[], user: string): Promise<ServerProcess[]> {
  const views = await Promise.all(servers.map(ringView));
  const order = servers.map((s, i) => ({ s, id: views[i]!.self.id })).sort((a, b) =>
    a.id < b.id ? -1 : 1
  );
  const key = userRingKey(user);
  const first = Math.max(0, order.findIndex((n) => n.id >= key));
  return order.map((_, j) => order[(first + j) % order.length]!.s);
}

async function register(server: ServerProcess, users: string[]): Promise<void> {
  const client = await TestClient.connect(server.url);
  try {
    for (const u of users) {
      const r = await client.request(
        { type: "register", username: u, secret: PASSWORD, ...TEST_ACCOUNT },
        60_000,
      );
      assert.equal(r.type, "ok", `register ${u}: ${JSON.stringify(r)}`);
    }
  } finally {
    await client.close();
  }
}

/** Whether the database of `server` holds a tombstone of `recipient`'s message `id`. */
function hasTombstone(server: ServerProcess, recipient: string, id: string): boolean {
  const db = new DatabaseSync(`${server.dataDir}/node.sqlite`, { readOnly: true });
  try {
    return db.prepare("SELECT 1 FROM tombstones WHERE recipient = ? AND message_id = ?")
      .get(recipient, id) !== undefined;
  } finally {
    db.close();
  }
}

/** Whether `server` reports `peer` suspect or no longer alive. */
async function seesDown(server: ServerProcess, peer: ServerProcess): Promise<boolean> {
  const health = await (await fetch(`${server.url}/healthz`)).json();
  return health.suspect.includes(peer.url) || !health.servers.includes(peer.url);
}

function freeze(servers: ServerProcess[]): void {
  for (const s of servers) Deno.kill(s.pid, "SIGSTOP");
}

function thaw(servers: ServerProcess[]): void {
  for (const s of servers) Deno.kill(s.pid, "SIGCONT");
}

Deno.test("two servers restarted from the same stale data do not vouch for a message acknowledged while they were down", async () => {
  // No repair rounds: what the restarted servers know comes from their disks and what a fetch
  // or their catching up asks for, never from a sync that would happen to run first.
  const env = { ...LIMITS, P2P_REPAIR_INTERVAL_MS: "600000" };
  const servers = await startCluster(5, { env });
  const restarted: ServerProcess[] = [];
  const clients: TestClient[] = [];
  let frozen: ServerProcess[] = [];
  try {
    await register(servers[0]!, ["alice", "rosa"]);
    const [p, x, y, z1, z2] = await ringOrderFor(servers, "rosa");
    // alice writes through a server that stays up: one message rosa will acknowledge while her
    // primary and first replica are down, one she leaves unread.
    const alice = await TestClient.connect(z1!.url);
    clients.push(alice);
    await alice.login("alice", PASSWORD, false);
    const acked = {
      id: "stale-acked-1",
      sentAt: Date.now(),
      envelope: "read while they were down",
    };
    const unread = { id: "stale-unread-1", sentAt: Date.now(), envelope: "not read yet" };
    const sent = await alice.request({ type: "mail_send", to: "rosa", messages: [acked, unread] });
    assert.equal(sent.type, "ok", JSON.stringify(sent));
    await waitFor(
      "both messages on rosa's 3 servers",
      () => [p!, x!, y!].every((s) => mailboxCopies([s]).size === 2),
      60_000,
      100,
    );

    // rosa's primary and first replica die; she reads both messages and acknowledges one.
    await Promise.all([p!, x!].map((s) => s.stop("SIGKILL")));
    await waitForCorrectRing([y!, z1!, z2!], "the 3 survivors to repair the ring");
    const reader = await TestClient.connect(y!.url);
    clients.push(reader);
    await reader.login("rosa", PASSWORD, false);
    const first = await reader.request({ type: "mail_fetch" }, 60_000);
    assert.equal(first.type, "mail", JSON.stringify(first));
    assert.deepEqual(first.type === "mail" && first.messages.map((m) => m.id).sort(), [
      acked.id,
      unread.id,
    ]);
    const ack = await reader.request(
      { type: "mail_ack", messages: [{ id: acked.id, from: "alice" }] },
      60_000,
    );
    assert.equal(ack.type, "ok", JSON.stringify(ack));
    await reader.close();
    assert.ok(!hasTombstone(p!, "rosa", acked.id) && !hasTombstone(x!, "rosa", acked.id));

    // Both come back from their disks, where the acknowledged message is still pending...
    for (const s of [p!, x!]) {
      restarted.push(
        await startServer({
          env,
          port: Number(new URL(s.url).port),
          dataDir: s.dataDir,
          peers: [z1!.url, z2!.url, y!.url],
        }),
      );
    }
    const [p2, x2] = restarted as [ServerProcess, ServerProcess];
    await waitForCorrectRing([p2, x2, y!, z1!, z2!], "the restarted servers to rejoin the ring");
    const rosa = await TestClient.connect(p2.url);
    clients.push(rosa);
    await rosa.login("rosa", PASSWORD, false);
    // ... and every server that holds its tombstone stops answering.
    frozen = [y!, z1!, z2!];
    freeze(frozen);
    await waitFor(
      "rosa's primary to see the frozen servers down",
      async () => (await Promise.all(frozen.map((f) => seesDown(p2, f)))).every(Boolean),
      60_000,
      200,
    );
    // rosa fetches from her restarted primary, whose only other copy is as stale as itself.
    // (waitFor takes a throw for "not yet": what goes wrong is collected and asserted after.)
    let answered = 0;
    const wrong: string[] = [];
    await waitFor(
      "three fetches answered while the others are frozen",
      async () => {
        const r = await rosa.request({ type: "mail_fetch" }, 60_000);
        if (r.type === "mail") {
          answered++;
          if (r.messages.some((m) => m.id === acked.id)) {
            wrong.push(`handed out again: ${JSON.stringify(r.messages.map((m) => m.id))}`);
          }
        } else if (r.type !== "error" || r.code !== "unavailable") {
          wrong.push(`fetch answered ${JSON.stringify(r)}`);
        }
        return answered >= 3 || wrong.length > 0;
      },
      120_000,
      200,
    );
    assert.equal(wrong.join("\n"), "", "while the servers with the tombstone were frozen");

    thaw(frozen);
    frozen = [];
    await waitForCorrectRing([p2, x2, y!, z1!, z2!], "the ring after the thaw");
    // The unread message is still there; the acknowledged one never comes back.
    await waitFor(
      "the unread message",
      async () => {
        const r = await rosa.request({ type: "mail_fetch" }, 60_000);
        if (r.type !== "mail") return false;
        const ids = r.messages.map((m) => m.id);
        if (ids.includes(acked.id)) wrong.push(`handed out again after the thaw: ${ids}`);
        return ids.includes(unread.id) || wrong.length > 0;
      },
      60_000,
      200,
    );
    assert.equal(wrong.join("\n"), "", "after the thaw");
  } finally {
    if (frozen.length) thaw(frozen);
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([...servers, ...restarted].map((s) => s.stop()));
  }
});

/**
 * Sends heartbeats on `client` as a browser does, so a request the ring keeps waiting does not
 * get its connection closed as silent; returns the function that stops them.
 */
function keepAlive(client: TestClient): () => void {
  const timer = setInterval(() => client.send({ v: 1, type: "heartbeat" }), 3_000);
  return () => clearInterval(timer);
}

/** Copies the data directory of `server` (frozen meanwhile, so the copy is consistent). */
async function copyData(server: ServerProcess): Promise<string> {
  const copy = await tempDataDir("p2pchat-node-old-");
  freeze([server]);
  try {
    for await (const e of Deno.readDir(server.dataDir)) {
      if (e.isFile) await Deno.copyFile(`${server.dataDir}/${e.name}`, `${copy}/${e.name}`);
    }
  } finally {
    thaw([server]);
  }
  return copy;
}

Deno.test("servers restarted from disks older than an account answer unavailable, not wrong_credentials or unknown_user, until they have it back", async () => {
  // Catching up waits for the frozen server however long the test takes.
  const env = { ...LIMITS, P2P_CATCH_UP_MAX_WAIT_MS: "600000" };
  const servers = await startCluster(5, { env });
  const restarted: ServerProcess[] = [];
  const clients: TestClient[] = [];
  const copies: string[] = [];
  const stops: (() => void)[] = [];
  let frozen: ServerProcess[] = [];
  try {
    const [p, x, y, z1, z2] = await ringOrderFor(servers, "ursula");
    // Another user with the same three servers: their disks hold an account before ursula's.
    let other = "";
    for (let i = 0; !other; i++) {
      const [q, r, s] = await ringOrderFor(servers, `olga${i}`);
      if (q === p && r === x && s === y) other = `olga${i}`;
    }
    await register(servers[0]!, ["alice", other]);
    // The disks of ursula's primary and first replica, as they were before she registered.
    await waitFor(
      `${other}'s account on ursula's primary and first replica`,
      () => [p!, x!].every((s) => accountCopies([s]).has(other)),
      60_000,
      200,
    );
    copies.push(await copyData(p!), await copyData(x!));
    await register(servers[0]!, ["ursula"]);
    await waitFor(
      "ursula's account on exactly her 3 servers",
      () =>
        [p!, x!, y!].every((s) => accountCopies([s]).has("ursula")) &&
        ![z1!, z2!].some((s) => accountCopies([s]).has("ursula")),
      60_000,
      200,
    );
    // alice is logged in on a server that stays up, and has not looked ursula up there yet.
    const alice = await TestClient.connect(z1!.url);
    clients.push(alice);
    await alice.login("alice", PASSWORD, false);
    stops.push(keepAlive(alice));

    // ursula's third copy stops answering; her primary and first replica come back from their
    // old disks.
    frozen = [y!];
    freeze(frozen);
    await Promise.all([p!, x!].map((s) => s.stop("SIGKILL")));
    for (const [i, s] of [p!, x!].entries()) {
      restarted.push(
        await startServer({
          env,
          port: Number(new URL(s.url).port),
          dataDir: copies[i],
          peers: [z1!.url, z2!.url, y!.url],
        }),
      );
    }
    const [p2, x2] = restarted as [ServerProcess, ServerProcess];
    await waitForCorrectRing([p2, x2, z1!, z2!], "the restarted servers to join the ring");
    assert.ok(!accountCopies([p2, x2, z1!, z2!]).has("ursula"), "a live server has the account");

    const ursula = await TestClient.connect(p2.url);
    clients.push(ursula);
    stops.push(keepAlive(ursula));
    const definite = (r: { type: string; code?: string }) =>
      r.type === "error" && r.code !== "unavailable";
    // (waitFor takes a throw for "not yet": what goes wrong is collected and asserted after.)
    const wrong: string[] = [];
    for (let i = 0; i < 2; i++) {
      const started = Date.now();
      const login = await ursula.request(
        { type: "login", username: "ursula", secret: PASSWORD },
        60_000,
      );
      console.log(
        `login ${i}: ${login.type === "error" ? login.code : login.type} in ${
          Date.now() - started
        } ms`,
      );
      assert.ok(!definite(login), `login with the right password: ${JSON.stringify(login)}`);
      if (login.type === "session") break;
      const send = await alice.request({
        type: "mail_send",
        to: "ursula",
        messages: [{ id: `to-ursula-${i}`, sentAt: Date.now(), envelope: "hello" }],
      }, 60_000);
      assert.ok(!definite(send), `mail_send to ursula: ${JSON.stringify(send)}`);
    }

    // The server holding the account answers again: the restarted ones get it back.
    thaw(frozen);
    frozen = [];
    await waitFor(
      "ursula's login",
      async () => {
        const login = await ursula.request(
          { type: "login", username: "ursula", secret: PASSWORD },
          60_000,
        );
        if (definite(login)) wrong.push(`login with the right password: ${JSON.stringify(login)}`);
        return login.type === "session" || wrong.length > 0;
      },
      90_000,
      500,
    );
    assert.equal(wrong.join("\n"), "", "after the thaw");
    await waitFor(
      "a message to ursula stored",
      async () => {
        const send = await alice.request({
          type: "mail_send",
          to: "ursula",
          messages: [{ id: "to-ursula-last", sentAt: Date.now(), envelope: "hello" }],
        }, 60_000);
        if (definite(send)) wrong.push(`mail_send to ursula: ${JSON.stringify(send)}`);
        return send.type === "ok" || wrong.length > 0;
      },
      90_000,
      500,
    );
    assert.equal(wrong.join("\n"), "", "after the thaw");
  } finally {
    for (const stop of stops) stop();
    if (frozen.length) thaw(frozen);
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([...servers, ...restarted].map((s) => s.stop()));
  }
});
