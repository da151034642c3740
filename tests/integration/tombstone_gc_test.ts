/**
 * Tombstones of acknowledged messages are collected on real servers once they are older than the
 * retention and its margin (issue #16), and the messages they stood for never come back: not from
 * the servers that collected them, not from the sender's retry, not from a late copy a server
 * offers (replica put, anti-entropy push), and not from a server killed -9 before the acks and
 * restarted from its own disk, which still holds them as pending. 3 servers, K = 2, W = 2, with the
 * test-only time scales (P2P_TEST_TIMINGS): a retention of seconds instead of days. Tombstones and
 * copies are read directly from every node's SQLite file (read-only).
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { ClusterKey, Hmac, replicationCall } from "../../server/cluster/mod.ts";
import {
  type MailboxRow,
  toEntry,
  type TombstoneRow,
  toTombstone,
} from "../../server/store/mod.ts";
import { waitForCorrectRing } from "../support/ring.ts";
import {
  type ServerProcess,
  startCluster,
  startServer,
  TEST_SECRET,
  waitFor,
} from "../support/server_process.ts";
import { holdsFor } from "../support/wait.ts";
import { TestClient } from "../support/ws_client.ts";

const PASSWORD = "correct horse battery";
/**
 * The retention: long enough for sending, replicating, fetching and acknowledging on a busy
 * machine (a message not fetched in time expires unread, and the test says so).
 */
const MAX_AGE_MS = 10_000;
/** Tombstones go this long after the retention (on one machine the clocks do not differ). */
const MARGIN_MS = 1_000;
const ENV = {
  P2P_TEST_TIMINGS: "1",
  P2P_TEST_MAILBOX_MAX_AGE_MS: String(MAX_AGE_MS),
  P2P_TEST_TOMBSTONE_MARGIN_MS: String(MARGIN_MS),
  P2P_TEST_TOMBSTONE_GC_EVERY_MS: "200",
  P2P_REPAIR_INTERVAL_MS: "300",
};

/** `server`'s rows of `recipient`: pending entries (id → held_as) and tombstones (id → deletedAt). */
function heldBy(server: ServerProcess, recipient: string) {
  const db = new DatabaseSync(`${server.dataDir}/node.sqlite`, { readOnly: true });
  try {
    const pending = db.prepare("SELECT message_id, held_as FROM mailbox WHERE recipient = ?")
      .all(recipient) as { message_id: string; held_as: string }[];
    const tombstones = db.prepare(
      "SELECT message_id, deleted_at FROM tombstones WHERE recipient = ?",
    ).all(recipient) as { message_id: string; deleted_at: number }[];
    return {
      pending: new Map(pending.map((r) => [r.message_id, r.held_as])),
      tombstones: new Map(tombstones.map((r) => [r.message_id, Number(r.deleted_at)])),
    };
  } finally {
    db.close();
  }
}

/** `server`'s rows of `recipient` as a server would send them to another. */
function rowsOf(server: ServerProcess, recipient: string) {
  const db = new DatabaseSync(`${server.dataDir}/node.sqlite`, { readOnly: true });
  try {
    const entries = (db.prepare("SELECT * FROM mailbox WHERE recipient = ?")
      .all(recipient) as MailboxRow[]).map(toEntry);
    const tombstones = (db.prepare("SELECT * FROM tombstones WHERE recipient = ?")
      .all(recipient) as TombstoneRow[]).map(toTombstone);
    return { entries, tombstones };
  } finally {
    db.close();
  }
}

async function metric(server: ServerProcess, series: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line ? Number(line.split(" ")[1]) : 0;
}

/** The ids `client`'s user gets from a fetch of the mailbox, sorted. */
async function fetchIds(client: TestClient): Promise<string[]> {
  const page = await client.request({ type: "mail_fetch" }, 60_000);
  if (page.type !== "mail") throw new Error(`mail_fetch: ${JSON.stringify(page)}`);
  return page.messages.map((m) => m.id).sort();
}

async function ack(client: TestClient, ids: string[]): Promise<void> {
  const reply = await client.request({
    type: "mail_ack",
    messages: ids.map((id) => ({ id, from: "alice" })),
  }, 60_000);
  assert.equal(reply.type, "ok", `ack: ${JSON.stringify(reply)}`);
}

const sorted = (ids: string[]) => [...ids].sort();

Deno.test("tombstones are collected on every server past the retention, and acknowledged messages never come back", async () => {
  const servers = await startCluster(3, { env: ENV });
  const clients: TestClient[] = [];
  let restarted: ServerProcess | undefined;
  try {
    const alice = await TestClient.connect(servers[0]!.url);
    clients.push(alice);
    await alice.register("bob", PASSWORD, 60_000);
    await alice.login("alice", PASSWORD, true);

    const first = ["first-msg-0", "first-msg-1", "first-msg-2"];
    const second = ["second-msg-0", "second-msg-1", "second-msg-2"];
    const all = [...first, ...second];
    const sentAt = Date.now();
    const messages = all.map((id) => ({ id, sentAt: Date.now(), envelope: `sealed:${id}` }));
    const sent = await alice.request({ type: "mail_send", to: "bob", messages }, 60_000);
    assert.equal(sent.type, "ok", JSON.stringify(sent));
    const late = () =>
      `${Date.now() - sentAt} ms after the send, retention ${MAX_AGE_MS} ms: ` +
      `on a machine this slow the messages may have expired unread`;

    // Every server holds every message (K = 2 on 3 servers); bob's primary marks its copies.
    const primary = await waitFor(
      "bob's 6 messages on all 3 servers, one of them holding them as primary",
      () => {
        const held = servers.map((s) => heldBy(s, "bob").pending);
        if (!held.every((p) => all.every((id) => p.has(id)))) return undefined;
        const primaries = servers.filter((_, i) =>
          all.every((id) => held[i]!.get(id) === "primary")
        );
        return primaries.length === 1 ? primaries[0] : undefined;
      },
      MAX_AGE_MS,
    );
    // The victim is not bob's primary: acks go on while it is down, without a fail-over.
    const [victim, other] = servers.filter((s) => s !== primary) as [ServerProcess, ServerProcess];

    const bob = await TestClient.connect(primary.url);
    clients.push(bob);
    await bob.login("bob", PASSWORD, false);
    assert.deepEqual(await fetchIds(bob), sorted(all), late());
    await ack(bob, first);
    await waitFor(
      "tombstones of the first 3 messages on all 3 servers, their entries gone",
      () =>
        servers.every((s) => {
          const held = heldBy(s, "bob");
          return first.every((id) => held.tombstones.has(id) && !held.pending.has(id));
        }),
      MAX_AGE_MS,
    );

    // One copy dies while it still holds the other 3 as pending, and they are acknowledged.
    await victim.stop("SIGKILL");
    const onVictim = heldBy(victim, "bob");
    const victimRows = rowsOf(victim, "bob");
    assert.deepEqual(sorted([...onVictim.pending.keys()]), sorted(second), "victim's pending");
    assert.deepEqual(sorted([...onVictim.tombstones.keys()]), sorted(first), "victim's tombstones");
    assert.deepEqual(await fetchIds(bob), sorted(second), late());
    await ack(bob, second);
    const survivors = [primary, other];
    const deletedAt = await waitFor(
      "tombstones of all 6 messages on both survivors, no entry left",
      () => {
        const held = survivors.map((s) => heldBy(s, "bob"));
        if (!held.every((h) => h.pending.size === 0 && all.every((id) => h.tombstones.has(id)))) {
          return undefined;
        }
        return held.map((h) => h.tombstones);
      },
      MAX_AGE_MS,
    );

    // Past the retention and the margin, every survivor collects them: none earlier.
    const early: string[] = [];
    await waitFor(
      "every tombstone of bob's collected on both survivors",
      () => {
        const now = Date.now();
        let left = 0;
        for (const [i, s] of survivors.entries()) {
          const held = heldBy(s, "bob").tombstones;
          left += held.size;
          for (const [id, at] of deletedAt[i]!) {
            if (!held.has(id) && now < at + MAX_AGE_MS + MARGIN_MS) {
              early.push(`${id} on ${s.url}, ${at + MAX_AGE_MS + MARGIN_MS - now} ms early`);
            }
          }
        }
        return left === 0;
      },
      MAX_AGE_MS + MARGIN_MS + 30_000,
    );
    assert.deepEqual(early, [], "tombstones collected before the retention and margin passed");
    for (const s of survivors) {
      assert.equal(
        await metric(s, "p2pchat_mailbox_tombstones_collected_total"),
        all.length,
        `tombstones collected on ${s.url}`,
      );
    }
    assert.deepEqual(await fetchIds(bob), [], "bob's mailbox after the collection");

    // Nothing can store them again. Alice's app sending them again (same ids, same sentAt) is
    // refused: older than the retention by the sender's clock.
    // (Her first connection may have been to the victim: she signs in again on a survivor.)
    await alice.close();
    const aliceAgain = await TestClient.connect(other.url);
    clients.push(aliceAgain);
    await aliceAgain.login("alice", PASSWORD, false);
    const retry = await aliceAgain.request({ type: "mail_send", to: "bob", messages }, 60_000);
    assert.ok(
      retry.type === "error" && retry.code === "bad_frame" &&
        /was sent more than 10 s ago/.test(retry.message),
      `alice's retry: ${JSON.stringify(retry)}`,
    );
    // A late copy from a server (what the victim's disk holds: the 3 entries as pending, the 3
    // first tombstones), as a replica put or an anti-entropy push, stores nothing either.
    for (const s of survivors) {
      const from = s === primary ? other.url : primary.url;
      const call = replicationCall(new ClusterKey(new Hmac(TEST_SECRET), from), 30_000);
      const put = await call(s.url, {
        v: 1,
        type: "put",
        entries: victimRows.entries,
        coordinate: false,
      });
      assert.ok(
        put.type === "ok" && put.count === 0,
        `late put to ${s.url}: ${JSON.stringify(put)}`,
      );
      const push = await call(s.url, { v: 1, type: "push", ...victimRows });
      assert.equal(push.type, "ok", `late push to ${s.url}: ${JSON.stringify(push)}`);
      const held = heldBy(s, "bob");
      assert.deepEqual(
        [[...held.pending.keys()], [...held.tombstones.keys()]],
        [[], []],
        `bob's rows on ${s.url} after the late copies`,
      );
      // The operator sees them counted as dropped (6 entries: the put's and the push's).
      await waitFor(
        `${s.url} to count the 6 late entries as dropped`,
        async () => await metric(s, "p2pchat_mailbox_too_old_dropped") >= 6,
      );
      assert.equal(await metric(s, "p2pchat_mailbox_too_old_dropped"), 6, s.url);
    }
    assert.deepEqual(await fetchIds(bob), [], "bob's mailbox after the late copies");

    // The victim comes back from its disk, holding 3 acknowledged messages as pending whose
    // tombstones no server has any more: entries past the retention are dropped on every path.
    restarted = await startServer({ env: ENV, dataDir: victim.dataDir, peers: [primary.url] });
    const ring = [primary, other, restarted];
    await waitForCorrectRing(ring, "the restarted server to join the ring");
    await waitFor(
      "the restarted server to catch up",
      () => restarted!.logs().includes('"caught_up"'),
      60_000,
    );
    // Its own old tombstones go at its first collection.
    await waitFor(
      "the restarted server to collect its 3 old tombstones",
      async () => await metric(restarted!, "p2pchat_mailbox_tombstones_collected_total") === 3,
    );
    const nothingOfBob = () =>
      ring.every((s) => {
        const held = heldBy(s, "bob");
        return held.pending.size === 0 && held.tombstones.size === 0;
      });
    assert.ok(nothingOfBob(), "a server holds a copy or tombstone of bob's after the restart");
    // bob signs in on the restarted server (one device: his first connection is closed first).
    await bob.close();
    const bobThere = await TestClient.connect(restarted.url);
    clients.push(bobThere);
    await bobThere.login("bob", PASSWORD, false);
    assert.deepEqual(await fetchIds(bobThere), [], "bob's mailbox, fetched on the restarted one");
    // Repair rounds (anti-entropy with the restarted copy) bring nothing back.
    await holdsFor("no server holds a copy or tombstone of bob's", nothingOfBob, 3000);
    assert.deepEqual(await fetchIds(bobThere), [], "bob's mailbox after repair rounds");
    for (const s of survivors) {
      assert.equal(
        await metric(s, "p2pchat_mailbox_tombstones_collected_total"),
        all.length,
        `tombstones collected on ${s.url} after the restart (none stored again)`,
      );
    }
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([...servers, ...(restarted ? [restarted] : [])].map((s) => s.stop()));
  }
});
