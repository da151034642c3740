/**
 * Offline mailboxes on the ring between real server processes (K = 2, W = 2): thousands of
 * messages survive two servers crashing at once and a restart of the whole cluster, and are
 * delivered exactly once, in order; joins and leaves during writes lose nothing acknowledged.
 * Copies are counted directly in every node's SQLite file.
 */
import assert from "node:assert/strict";
import { accountCopies, mailboxCopies, waitForCorrectRing } from "../support/ring.ts";
import {
  type ServerProcess,
  startCluster,
  startServer,
  waitFor,
} from "../support/server_process.ts";
import { TEST_ACCOUNT, TestClient } from "../support/ws_client.ts";

const PASSWORD = "correct horse battery";
const K = 2;

/** Message `i` from `from` to `to`, with a ~200-character opaque envelope. */
function mail(from: string, to: string, i: number) {
  return {
    id: `${from}-${to}-${String(i).padStart(5, "0")}`,
    sentAt: Date.now(),
    envelope: `sealed:${to}:${i}:`.padEnd(200, "x"),
  };
}

/** Sends `count` messages to `to` in batches; resolves when every batch is acknowledged. */
async function sendMail(
  client: TestClient,
  from: string,
  to: string,
  from_i: number,
  count: number,
) {
  for (let i = from_i; i < from_i + count; i += 100) {
    const batch = Array.from(
      { length: Math.min(100, from_i + count - i) },
      (_, j) => mail(from, to, i + j),
    );
    const reply = await client.request({ type: "mail_send", to, messages: batch }, 30_000);
    assert.equal(reply.type, "ok", `batch to ${to} refused: ${JSON.stringify(reply)}`);
  }
}

/** Logs `user` in on `server`, fetches the mailbox, acknowledges it; returns the message ids. */
async function drain(server: ServerProcess, user: string): Promise<string[]> {
  const client = await TestClient.connect(server.url);
  try {
    await client.login(user, PASSWORD, false);
    const reply = await client.request({ type: "mail_fetch" }, 30_000);
    if (reply.type !== "mail") throw new Error(`fetch for ${user}: ${JSON.stringify(reply)}`);
    const ids = reply.messages.map((m) => m.id);
    const ack = await client.request({
      type: "mail_ack",
      messages: reply.messages.map((m) => ({ id: m.id, from: m.from })),
    }, 30_000);
    assert.equal(ack.type, "ok");
    const again = await client.request({ type: "mail_fetch" }, 30_000);
    assert.deepEqual(
      again.type === "mail" && again.messages,
      [],
      `${user}'s mailbox not empty after ack`,
    );
    return ids;
  } finally {
    await client.close();
  }
}

async function register(server: ServerProcess, users: string[]) {
  const client = await TestClient.connect(server.url);
  for (const u of users) {
    const r = await client.request({
      type: "register",
      username: u,
      secret: PASSWORD,
      ...TEST_ACCOUNT,
    });
    assert.equal(r.type, "ok", `register ${u}: ${JSON.stringify(r)}`);
  }
  await client.close();
}

async function waitForCopies(
  servers: ServerProcess[],
  expected: number,
  want: number,
  what: string,
) {
  const started = Date.now();
  await waitFor(
    what,
    () => {
      const copies = mailboxCopies(servers);
      return copies.size === expected && [...copies.values()].every((n) => n >= want);
    },
    60_000,
    200,
  );
  return Date.now() - started;
}

const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => i + from);

Deno.test("2,000 offline messages survive kill -9 of two servers at once and arrive exactly once, in order", async () => {
  const servers = await startCluster(5);
  try {
    await waitForCorrectRing(servers, "5 servers to form one ring");
    const recipients = ["bob", "carol", "dave", "erin"];
    await register(servers[0]!, ["alice", ...recipients]);
    const alice = await TestClient.connect(servers[0]!.url);
    await alice.login("alice", PASSWORD, false);
    for (const r of recipients) await sendMail(alice, "alice", r, 0, 500);
    await alice.close();
    await waitForCopies(servers, 2000, K + 1, "every message to reach K+1 copies");

    // Two servers die at the same moment (not the first one, which the test keeps using).
    const victims = [servers[1]!, servers[3]!];
    await Promise.all(victims.map((s) => s.stop("SIGKILL")));
    const survivors = servers.filter((s) => !victims.includes(s));
    await waitForCorrectRing(survivors, "the 3 survivors to repair the ring");
    const repairMs = await waitForCopies(survivors, 2000, K + 1, "K+1 copies among the survivors");
    console.log(`K+1 copies restored ${repairMs} ms after the ring repaired`);

    // Each recipient logs in on some surviving server and gets exactly their 500, in order.
    for (const [i, r] of recipients.entries()) {
      const ids = await drain(survivors[i % survivors.length]!, r);
      assert.deepEqual(ids, range(500).map((n) => mail("alice", r, n).id), `${r}'s messages`);
    }
    await waitFor(
      "acknowledged messages to leave every copy",
      () => mailboxCopies(survivors).size === 0,
    );
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
});

Deno.test("after all servers stop and start again from disk, accounts and undelivered messages are back", async () => {
  const servers = await startCluster(3);
  const restarted: ServerProcess[] = [];
  try {
    await waitForCorrectRing(servers, "3 servers to form one ring");
    await register(servers[0]!, ["alice", "bob"]);
    const alice = await TestClient.connect(servers[1]!.url);
    await alice.login("alice", PASSWORD, false);
    await sendMail(alice, "alice", "bob", 0, 300);
    await alice.close();
    await Promise.all(servers.map((s) => s.stop()));

    const ports = servers.map((s) => Number(new URL(s.url).port));
    for (const [i, s] of servers.entries()) {
      restarted.push(
        await startServer({
          port: ports[i],
          dataDir: s.dataDir,
          peers: servers.filter((o) => o !== s).map((o) => o.url),
        }),
      );
    }
    await waitForCorrectRing(restarted, "the restarted servers to form one ring");
    const ids = await drain(restarted[2]!, "bob");
    assert.deepEqual(ids, range(300).map((n) => mail("alice", "bob", n).id));
  } finally {
    await Promise.all([...servers, ...restarted].map((s) => s.stop()));
  }
});

Deno.test("servers joining and leaving while messages are written lose no acknowledged message", async () => {
  const servers = await startCluster(4);
  const joined: ServerProcess[] = [];
  try {
    await waitForCorrectRing(servers, "4 servers to form one ring");
    await register(servers[0]!, ["alice", "bob", "carol"]);
    const alice = await TestClient.connect(servers[0]!.url);
    await alice.login("alice", PASSWORD, false);
    const newcomers: string[] = [];
    const writing = (async () => {
      const registrar = await TestClient.connect(servers[1]!.url);
      for (let round = 0; round < 6; round++) {
        await sendMail(alice, "alice", "bob", round * 100, 100);
        await sendMail(alice, "alice", "carol", round * 100, 100);
        // Registrations during the churn are acknowledged writes too.
        for (const n of [0, 1]) {
          const name = `new${round}x${n}`;
          const r = await registrar.request({
            type: "register",
            username: name,
            secret: PASSWORD,
            ...TEST_ACCOUNT,
          });
          assert.equal(r.type, "ok", `register ${name}: ${JSON.stringify(r)}`);
          newcomers.push(name);
        }
      }
      await registrar.close();
    })();
    // Meanwhile: two servers join and one leaves gracefully.
    joined.push(await startServer({ peers: [servers[0]!.url] }));
    await servers[3]!.stop();
    joined.push(await startServer({ peers: [servers[1]!.url] }));
    await writing;
    await alice.close();

    const live = [servers[0]!, servers[1]!, servers[2]!, ...joined];
    await waitForCorrectRing(live, "the ring to settle after joins and a leave");
    await waitForCopies(live, 1200, K + 1, "every acknowledged message to have K+1 copies");
    const copies = mailboxCopies(live);
    assert.equal(copies.size, 1200, "an acknowledged message was lost");
    for (const [key, n] of copies) assert.ok(n >= K + 1, `${key} has only ${n} copies`);
    const accounts = ["alice", "bob", "carol", ...newcomers];
    await waitFor("every account to have K+1 copies", () => {
      const c = accountCopies(live);
      return accounts.every((u) => (c.get(u) ?? 0) >= K + 1);
    }, 40_000);
    // ... and an account is not copied to every server: the registry is partitioned.
    const perServer = [...accountCopies(live).values()];
    assert.ok(perServer.some((n) => n < live.length), `copies per account: ${perServer}`);
  } finally {
    await Promise.all([...servers, ...joined].map((s) => s.stop()));
  }
});

Deno.test("a sender on another server is told of deliveries; an online recipient is told of new mail", async () => {
  const servers = await startCluster(3);
  const clients: TestClient[] = [];
  try {
    await waitForCorrectRing(servers, "3 servers to form one ring");
    await register(servers[0]!, ["alice", "bob"]);
    const alice = await TestClient.connect(servers[0]!.url);
    clients.push(alice);
    await alice.login("alice", PASSWORD, false);
    await sendMail(alice, "alice", "bob", 0, 3);
    const ids = await drain(servers[2]!, "bob");
    const receipt = await alice.next((f) => f.type === "delivered");
    assert.deepEqual(receipt, { v: 1, type: "delivered", by: "bob", ids });
    // Mail for a user whose session runs after all (the sender's view was stale): that session
    // is told to fetch, on whichever server it is.
    const bob = await TestClient.connect(servers[1]!.url);
    clients.push(bob);
    await bob.login("bob", PASSWORD, false);
    await sendMail(alice, "alice", "bob", 10, 1);
    assert.deepEqual(await bob.next((f) => f.type === "mail_waiting"), {
      v: 1,
      type: "mail_waiting",
    });
    const mailbox = await bob.request({ type: "mail_fetch" });
    assert.deepEqual(
      mailbox.type === "mail" && mailbox.messages.map((m) => m.id),
      [mail("alice", "bob", 10).id],
    );
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});

Deno.test("a recipient cannot send anyone a forged 'delivered': receipts name the stored sender", async () => {
  const servers = await startCluster(3);
  const clients: TestClient[] = [];
  try {
    await waitForCorrectRing(servers, "3 servers to form one ring");
    await register(servers[0]!, ["alice", "carol", "mallory"]);
    const alice = await TestClient.connect(servers[0]!.url);
    const carol = await TestClient.connect(servers[1]!.url);
    clients.push(alice, carol);
    await alice.login("alice", PASSWORD, false);
    await carol.login("carol", PASSWORD, false);
    await sendMail(alice, "alice", "mallory", 0, 1);
    await sendMail(carol, "carol", "mallory", 0, 1);
    const mallory = await TestClient.connect(servers[2]!.url);
    clients.push(mallory);
    await mallory.login("mallory", PASSWORD, false);
    const fetched = await mallory.request({ type: "mail_fetch" }, 30_000);
    assert.equal(fetched.type, "mail");
    // mallory claims both messages came from carol, in one acknowledgement.
    const ack = await mallory.request({
      type: "mail_ack",
      messages: [
        { id: mail("alice", "mallory", 0).id, from: "carol" },
        { id: mail("carol", "mallory", 0).id, from: "carol" },
      ],
    }, 30_000);
    assert.equal(ack.type, "ok");
    assert.deepEqual(await alice.next((f) => f.type === "delivered"), {
      v: 1,
      type: "delivered",
      by: "mallory",
      ids: [mail("alice", "mallory", 0).id],
    });
    assert.deepEqual(await carol.next((f) => f.type === "delivered"), {
      v: 1,
      type: "delivered",
      by: "mallory",
      ids: [mail("carol", "mallory", 0).id],
    });
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});

Deno.test("a flooded mailbox is read page by page, each page within what a client accepts; one sender cannot fill it", async () => {
  const servers = await startCluster(3, { env: { P2P_MAILBOX_QUOTA_PER_SENDER: "300" } });
  const clients: TestClient[] = [];
  try {
    await waitForCorrectRing(servers, "3 servers to form one ring");
    await register(servers[0]!, ["mallory", "victim", "alice"]);
    const mallory = await TestClient.connect(servers[0]!.url);
    clients.push(mallory);
    await mallory.login("mallory", PASSWORD, false);
    // 300 messages of 16 KiB (4.8 MB): three per frame, within the 64 KiB frame limit.
    const big = (i: number) => ({
      id: `flood-${String(i).padStart(5, "0")}`,
      sentAt: Date.now(),
      envelope: "z".repeat(16 * 1024 - 300),
    });
    for (let i = 0; i < 300; i += 3) {
      const r = await mallory.request({
        type: "mail_send",
        to: "victim",
        messages: [big(i), big(i + 1), big(i + 2)],
      }, 30_000);
      assert.equal(r.type, "ok", JSON.stringify(r).slice(0, 300));
    }
    const over = await mallory.request({ type: "mail_send", to: "victim", messages: [big(300)] });
    assert.equal(over.type === "error" && over.code, "mailbox_full");
    // Another sender still gets through.
    const alice = await TestClient.connect(servers[1]!.url);
    clients.push(alice);
    await alice.login("alice", PASSWORD, false);
    await sendMail(alice, "alice", "victim", 0, 1);
    // The victim reads it all, page after page, each page under the client's 4 MiB frame limit.
    const victim = await TestClient.connect(servers[2]!.url);
    clients.push(victim);
    await victim.login("victim", PASSWORD, false);
    const seen: string[] = [];
    let pages = 0;
    for (let more = true; more && pages < 100; pages++) {
      const after = seen.at(-1);
      const page = await victim.request(
        { type: "mail_fetch", ...(after ? { after } : {}) },
        30_000,
      );
      assert.equal(page.type, "mail");
      if (page.type !== "mail") break;
      assert.ok(JSON.stringify(page).length < 4 * 1024 * 1024, "a page larger than a client takes");
      seen.push(...page.messages.map((m) => m.id));
      more = page.more === true;
    }
    assert.ok(pages >= 3, `${pages} pages`);
    assert.equal(seen.length, 301);
    assert.equal(new Set(seen).size, 301, "a message came twice");
    for (let i = 0; i < seen.length; i += 100) {
      const ack = await victim.request({
        type: "mail_ack",
        messages: seen.slice(i, i + 100).map((id) => ({ id, from: "mallory" })),
      }, 30_000);
      assert.equal(ack.type, "ok");
    }
    const empty = await victim.request({ type: "mail_fetch" }, 30_000);
    assert.deepEqual(empty.type === "mail" && [empty.messages.length, empty.more], [0, undefined]);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});
