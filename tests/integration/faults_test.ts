/**
 * Faults that once broke the ring's promises (issue #16), with real server processes and their
 * SQLite files (K = 2, W = 2): servers restarted from old disks must not hand out messages that
 * were acknowledged while they were down, and a registration cut off by a kill -9 must succeed
 * when the user retries it with the same password and keys.
 */
import assert from "node:assert/strict";
import { userRingKey } from "../../server/store/mod.ts";
import { accountCopies, mailboxCopies, ringView, waitForCorrectRing } from "../support/ring.ts";
import {
  type ServerProcess,
  startCluster,
  startServer,
  waitFor,
} from "../support/server_process.ts";
import { TEST_ACCOUNT, TestClient } from "../support/ws_client.ts";

const PASSWORD = "correct horse battery";
const K = 2;

/** Message `i` of batch `batch` from alice to `to`. */
function mail(to: string, batch: string, i: number) {
  return { id: `${batch}-${to}-${String(i).padStart(3, "0")}`, sentAt: Date.now(), envelope: "x" };
}

async function send(
  alice: TestClient,
  to: string,
  batch: string,
  count: number,
): Promise<string[]> {
  const messages = Array.from({ length: count }, (_, i) => mail(to, batch, i));
  const reply = await alice.request({ type: "mail_send", to, messages }, 60_000);
  assert.equal(reply.type, "ok", `send ${batch} to ${to}: ${JSON.stringify(reply)}`);
  return messages.map((m) => m.id);
}

/** Logs `user` in on `server`; fetches their mailbox and acknowledges it; returns the ids. */
async function drain(server: ServerProcess, user: string): Promise<string[]> {
  const client = await TestClient.connect(server.url);
  try {
    await client.login(user, PASSWORD, false);
    const reply = await client.request({ type: "mail_fetch" }, 60_000);
    if (reply.type !== "mail") throw new Error(`fetch for ${user}: ${JSON.stringify(reply)}`);
    const ack = await client.request({
      type: "mail_ack",
      messages: reply.messages.map((m) => ({ id: m.id, from: m.from })),
    }, 60_000);
    assert.equal(ack.type, "ok", `ack for ${user}: ${JSON.stringify(ack)}`);
    return reply.messages.map((m) => m.id);
  } finally {
    await client.close();
  }
}

async function register(server: ServerProcess, users: string[]) {
  const client = await TestClient.connect(server.url);
  try {
    for (const u of users) {
      const r = await client.request({
        type: "register",
        username: u,
        secret: PASSWORD,
        ...TEST_ACCOUNT,
      }, 60_000);
      assert.equal(r.type, "ok", `register ${u}: ${JSON.stringify(r)}`);
    }
  } finally {
    await client.close();
  }
}

/**
 * Repair rounds every 5 s instead of every second: a restarted server then serves for a few
 * seconds from its old disk before its first round, so a read that trusts its data is seen.
 */
const SLOW_REPAIR = {
  env: {
    P2P_REPAIR_INTERVAL_MS: "5000",
    // 31 users register, and 30 log in at once, from 127.0.0.1: registrations and logins in
    // flight count against the address's budgets, across the ring
    // (tests/integration/limits_test.ts). The limits are not what this test is about.
    P2P_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE: "1000",
    P2P_REGISTRATIONS_PER_MINUTE: "1000",
  },
};

/** Restarts `server` on its address from its data directory, seeded with `peers`. */
function restart(server: ServerProcess, peers: ServerProcess[]): Promise<ServerProcess> {
  return startServer({
    ...SLOW_REPAIR,
    port: Number(new URL(server.url).port),
    dataDir: server.dataDir,
    peers: peers.map((p) => p.url),
  });
}

/**
 * A loopback TCP relay to `server` for one client: bytes from the client always go through;
 * those from the server are dropped once `cut()` was called, as when a connection is cut off
 * mid-request. When the server side ends, the client side is closed.
 */
function cuttableRelay(server: ServerProcess) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let cut = false;
  const open: Deno.Conn[] = [];
  const pump = async (from: Deno.Conn, to: Deno.Conn, drop: () => boolean) => {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (let n = await from.read(buffer); n !== null; n = await from.read(buffer)) {
        if (!drop()) await to.write(buffer.subarray(0, n));
      }
    } catch { /* either side went away */ }
    for (const c of [from, to]) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
  };
  const accepting = (async () => {
    for await (const client of listener) {
      const upstream = await Deno.connect({
        hostname: "127.0.0.1",
        port: Number(new URL(server.url).port),
      });
      open.push(client, upstream);
      void pump(client, upstream, () => false);
      void pump(upstream, client, () => cut);
    }
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    cut: () => cut = true,
    async close() {
      listener.close();
      for (const c of open) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      await accepting;
    },
  };
}

Deno.test("servers restarted from old disks never hand out a message acknowledged while they were down", async () => {
  const servers = await startCluster(5, SLOW_REPAIR);
  const restarted: ServerProcess[] = [];
  const clients: TestClient[] = [];
  let fetching = true;
  let loops: Promise<void>[] = [];
  let heartbeats: ReturnType<typeof setInterval> | undefined;
  try {
    // Many recipients, so that some have a primary among the servers that will be killed.
    const recipients = Array.from({ length: 30 }, (_, i) => `rcpt${String(i).padStart(2, "0")}`);
    await register(servers[0]!, ["alice", ...recipients]);
    const alice = await TestClient.connect(servers[0]!.url);
    clients.push(alice);
    await alice.login("alice", PASSWORD, false);
    // alice is idle while 30 recipients read (longer than the server's silence timeout on a busy
    // machine): she sends heartbeats, as a browser does.
    heartbeats = setInterval(() => alice.send({ v: 1, type: "heartbeat" }), 3_000);
    const acked = new Map<string, Set<string>>(recipients.map((r) => [r, new Set()]));
    for (const r of recipients) {
      for (const id of await send(alice, r, "old", 4)) acked.get(r)!.add(id);
    }
    await waitFor(
      "every message to be on K+1 disks",
      () => {
        const copies = mailboxCopies(servers);
        return copies.size === 4 * recipients.length && [...copies.values()].every((n) => n > K);
      },
      60_000,
      200,
    );

    // Two servers die at once: the two (besides alice's) that are primary for most recipients.
    // Their disks keep the 4 messages of each recipient they hold.
    const ids = (await Promise.all(servers.map(ringView))).map((v) => v.self.id);
    const ring = [...ids].sort();
    const primaryOf = (user: string) => {
      const key = userRingKey(user);
      return ring.find((id) => id >= key) ?? ring[0]!;
    };
    const load = (i: number) => recipients.filter((r) => primaryOf(r) === ids[i]).length;
    const victims = [1, 2, 3, 4].sort((a, b) => load(b) - load(a)).slice(0, 2).map((i) =>
      servers[i]!
    );
    const victimIds = new Set(victims.map((v) => ids[servers.indexOf(v)]!));
    const onRestarted = recipients.filter((r) => victimIds.has(primaryOf(r)));
    assert.ok(onRestarted.length > 0, "no recipient has a killed server as primary");
    await Promise.all(victims.map((s) => s.stop("SIGKILL")));
    const survivors = servers.filter((s) => !victims.includes(s));
    await waitForCorrectRing(survivors, "the 3 survivors to repair the ring");

    // Meanwhile more mail is written, and every recipient reads and acknowledges all of it...
    for (const r of recipients) {
      for (const id of await send(alice, r, "new", 2)) acked.get(r)!.add(id);
    }
    for (const [i, r] of recipients.entries()) {
      const got = await drain(survivors[i % survivors.length]!, r);
      assert.deepEqual(
        new Set(got),
        acked.get(r),
        `${r} read everything while 2 servers were down`,
      );
    }
    // ... and then is sent messages they have not read yet.
    const unread = new Map<string, string[]>();
    for (const r of recipients) unread.set(r, await send(alice, r, "unread", 2));

    // Every recipient logs in on a survivor and keeps fetching (without acknowledging) while the
    // killed servers come back from their old disks and the ring repairs.
    const fetchers = await Promise.all(recipients.map(async (r, i) => {
      const client = await TestClient.connect(survivors[i % survivors.length]!.url);
      clients.push(client);
      await client.login(r, PASSWORD, false);
      return { r, client };
    }));
    /** Acknowledged messages fetched again, and how many fetches returned one. */
    const again = new Set<string>();
    let fetchesWithAcked = 0;
    let fetches = 0;
    loops = fetchers.map(async ({ r, client }) => {
      while (fetching) {
        const reply = await client.request({ type: "mail_fetch" }, 60_000);
        if (reply.type === "mail") {
          fetches++;
          const stale = reply.messages.filter((m) => acked.get(r)!.has(m.id));
          for (const m of stale) again.add(`${r}/${m.id}`);
          if (stale.length) fetchesWithAcked++;
        }
        // Paced below the per-connection frame limit (50/s).
        await new Promise((ok) => setTimeout(ok, 40));
      }
    });
    for (const v of victims) restarted.push(await restart(v, survivors));
    const all = [...survivors, ...restarted];
    await waitForCorrectRing(all, "the restarted servers to rejoin the ring");
    // Repair is done when no disk holds an acknowledged message any more and every unread one is
    // on K+1 disks.
    await waitFor(
      "repair to remove acknowledged copies and restore unread ones",
      () => {
        const copies = mailboxCopies(all);
        return copies.size === 2 * recipients.length && [...copies.values()].every((n) => n > K);
      },
      60_000,
      200,
    );
    const fetchesDuringRepair = fetches;
    fetching = false;
    await Promise.all(loops);
    console.log(
      `${onRestarted.length} of ${recipients.length} recipients had a restarted primary; ` +
        `${fetchesDuringRepair} fetches during the restart; ${again.size} acknowledged ` +
        `messages returned again, by ${fetchesWithAcked} fetches`,
    );
    assert.deepEqual([...again], [], "acknowledged messages were delivered again");

    // Nothing unread was lost: each recipient gets exactly the unread messages, in order.
    for (const [i, r] of recipients.entries()) {
      assert.deepEqual(await drain(all[i % all.length]!, r), unread.get(r), `${r}'s unread mail`);
    }
  } finally {
    clearInterval(heartbeats);
    fetching = false;
    await Promise.allSettled(loops);
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([...servers, ...restarted].map((s) => s.stop()));
  }
});

/** Keys as a browser registers them (opaque to the server; only their shape is checked). */
function keysOf(seed: string) {
  const b64 = (s: string, n: number) => s.repeat(Math.ceil(n / s.length)).slice(0, n);
  return {
    encryption: b64(`enc${seed}`, 300),
    signing: b64(`sig${seed}`, 300),
    wrapped: b64(`wrap${seed}`, 200),
  };
}

Deno.test("a registration cut off by kill -9 succeeds when retried with the same password and keys, and ends with K+1 copies", async () => {
  const servers = await startCluster(5);
  const clients: TestClient[] = [];
  try {
    const name = "rita";
    const keys = keysOf("rita");
    // Ring order: the replica set of the name is its primary and the next K servers.
    const views = await Promise.all(servers.map(ringView));
    const order = servers.map((s, i) => ({ s, id: views[i]!.self.id })).sort((a, b) =>
      a.id < b.id ? -1 : 1
    );
    const key = userRingKey(name);
    const first = Math.max(0, order.findIndex((n) => n.id >= key));
    const replicaSet = [0, 1, 2].map((j) => order[(first + j) % order.length]!.s);
    const outside = servers.filter((s) => !replicaSet.includes(s));
    // The client registers through a server outside the replica set; its connection is cut
    // (nothing more reaches the client) and the server is killed, with the last replica, as soon
    // as the first copy of the account is on a disk.
    const home = outside[0]!;
    const relay = cuttableRelay(home);
    const client = await TestClient.connect(relay.url);
    clients.push(client);
    let answered: string | undefined;
    relay.cut();
    client.request({
      type: "register",
      username: name,
      secret: PASSWORD,
      salt: TEST_ACCOUNT.salt,
      keys,
    }, 60_000)
      .then((r) => answered = r.type === "error" ? r.code : r.type, () => {});
    await waitFor(
      "the first copy of the account on a disk",
      () => {
        return (accountCopies(servers).get(name) ?? 0) > 0;
      },
      60_000,
      5,
    );
    await Promise.all([home, replicaSet[2]!].map((s) => s.stop("SIGKILL")));
    await client.waitClosed("the killed server's connection to close", 60_000);
    await relay.close();
    assert.equal(answered, undefined, "the first attempt was answered: not cut off");
    const live = [replicaSet[0]!, replicaSet[1]!, outside[1]!];
    const copiesAfterKill = accountCopies(live).get(name) ?? 0;
    console.log(`first attempt cut off; copies on the 3 live servers: ${copiesAfterKill}`);
    assert.ok(copiesAfterKill > 0, "the first attempt left no copy: nothing to retry");
    await waitForCorrectRing(live, "the 3 survivors to repair the ring");

    // The user retries on a live server with the same password and keys: it succeeds.
    const retry = await TestClient.connect(outside[1]!.url);
    clients.push(retry);
    const again = await retry.request(
      { type: "register", username: name, secret: PASSWORD, salt: TEST_ACCOUNT.salt, keys },
      60_000,
    );
    assert.deepEqual(again.type === "error" ? again.code : again.type, "ok", JSON.stringify(again));
    await waitFor(
      "K+1 copies of the account",
      () => accountCopies(live).get(name) === K + 1,
      60_000,
      200,
    );
    const session = await retry.request({ type: "login", username: name, secret: PASSWORD });
    assert.equal(session.type, "session", JSON.stringify(session));
    const published = await retry.request({ type: "get_keys", username: name });
    assert.deepEqual(
      published.type === "keys" && [published.encryption, published.signing],
      [keys.encryption, keys.signing],
    );

    // Anyone else asking for the name is still refused: another password, or other keys.
    const other = await TestClient.connect(replicaSet[0]!.url);
    clients.push(other);
    for (
      const [what, frame] of [
        ["another password", { secret: "another password entirely", keys }],
        ["other keys", { secret: PASSWORD, keys: keysOf("mallory") }],
        ["another salt", { secret: PASSWORD, keys, salt: "b".repeat(22) }],
      ] as const
    ) {
      const r = await other.request(
        { type: "register", username: name, salt: TEST_ACCOUNT.salt, ...frame },
        60_000,
      );
      assert.equal(r.type === "error" && r.code, "username_taken", `${what}: ${JSON.stringify(r)}`);
    }
    assert.equal(accountCopies(live).get(name), K + 1);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});
