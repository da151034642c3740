import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { PENDING_FROM_SQL } from "./mailbox.ts";
import { type MailboxEntry, NodeStore } from "./mod.ts";

function entry(over: Partial<MailboxEntry> & { messageId: string }): MailboxEntry {
  return {
    recipient: "bob",
    ringKey: "80",
    sender: "alice",
    sentAt: 1,
    seq: 1,
    envelope: "ciphertext",
    ...over,
  };
}

Deno.test("mailbox: inserting the same message twice stores it once", () => {
  const store = new NodeStore(":memory:");
  assert.equal(store.mailbox.insert([entry({ messageId: "m1" }), entry({ messageId: "m2" })]), 2);
  assert.equal(store.mailbox.insert([entry({ messageId: "m1" }), entry({ messageId: "m3" })]), 1);
  assert.deepEqual(store.mailbox.pending("bob").map((e) => e.messageId), ["m1", "m2", "m3"]);
  store.close();
});

Deno.test("mailbox: pending entries come in coordinator order, not in the sender's clock order", () => {
  const store = new NodeStore(":memory:");
  store.mailbox.insert([
    entry({ messageId: "late", seq: 30, sentAt: 1 }),
    entry({ messageId: "first", seq: 10, sentAt: 999 }),
    entry({ messageId: "second", seq: 20, sentAt: 5 }),
    entry({ messageId: "other", recipient: "carol", seq: 1 }),
  ]);
  assert.deepEqual(store.mailbox.pending("bob").map((e) => e.messageId), [
    "first",
    "second",
    "late",
  ]);
  assert.equal(store.mailbox.countPending("carol"), 1);
  store.close();
});

Deno.test("mailbox: an acknowledged message cannot be brought back by a late replica copy", () => {
  const store = new NodeStore(":memory:");
  store.mailbox.insert([entry({ messageId: "m1" })]);
  store.mailbox.tombstone([{ recipient: "bob", messageId: "m1", ringKey: "80", deletedAt: 5 }]);
  assert.deepEqual(store.mailbox.pending("bob"), []);
  assert.equal(store.mailbox.insert([entry({ messageId: "m1" })]), 0);
  assert.deepEqual(store.mailbox.pending("bob"), []);
  assert.deepEqual(store.mailbox.itemKeys({ start: "00", end: "00" }), [["t", "bob", "m1"]]);
  store.close();
});

Deno.test("mailbox: ranges wrap around the ring like CHORD intervals (start, end]", () => {
  const store = new NodeStore(":memory:");
  const keys = ["00", "10", "7f", "80", "ff"];
  store.mailbox.insert(
    keys.map((k) => entry({ messageId: `id-${k}`, recipient: `u${k}`, ringKey: k })),
  );
  const inRange = (start: string, end: string) =>
    store.mailbox.itemKeys({ start, end }).map(([, , id]) => id.slice(3)).sort();
  // A slow reference: (start, end] with wrap-around, whole ring when start === end.
  const reference = (start: string, end: string) =>
    keys.filter((k) =>
      start === end ? true : start < end ? k > start && k <= end : k > start || k <= end
    ).sort();
  for (const start of keys) {
    for (const end of keys) {
      assert.deepEqual(inRange(start, end), reference(start, end), `${start}..${end}`);
    }
  }
  store.close();
});

Deno.test("mailbox: equal contents give equal digests, any difference changes the digest", async () => {
  const a = new NodeStore(":memory:");
  const b = new NodeStore(":memory:");
  const all = { start: "00", end: "00" };
  a.mailbox.insert([entry({ messageId: "m1" }), entry({ messageId: "m2" })]);
  b.mailbox.insert([entry({ messageId: "m2" }), entry({ messageId: "m1" })]);
  assert.deepEqual(await a.digest(all), await b.digest(all));
  b.mailbox.tombstone([{ recipient: "bob", messageId: "m2", ringKey: "80", deletedAt: 1 }]);
  assert.notEqual((await a.digest(all)).digest, (await b.digest(all)).digest);
  a.close();
  b.close();
});

Deno.test("mailbox: rows are marked primary or replica, and rows outside the kept range are dropped", () => {
  const store = new NodeStore(":memory:");
  store.mailbox.insert(["10", "50", "90"].map((k) => entry({ messageId: `id-${k}`, ringKey: k })));
  store.mailbox.markPrimary({ start: "40", end: "60" });
  assert.deepEqual(store.mailbox.counts(), { primary: 1, replica: 2, tombstones: 0 });
  assert.equal(store.mailbox.dropOutside({ start: "05", end: "60" }), 1);
  assert.deepEqual(store.mailbox.pending("bob").map((e) => e.ringKey).sort(), ["10", "50"]);
  store.close();
});

Deno.test("mailbox: entries survive closing and reopening the database file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const first = new NodeStore(`${dir}/node.sqlite`);
    first.mailbox.insert([entry({ messageId: "durable" })]);
    first.close();
    const again = new NodeStore(`${dir}/node.sqlite`);
    assert.deepEqual(again.mailbox.pending("bob").map((e) => e.messageId), ["durable"]);
    again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mailbox: one sender's pending count and characters come from an index, not the envelopes", () => {
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/node.sqlite`;
  try {
    const store = new NodeStore(path);
    store.mailbox.insert([
      entry({ messageId: "c1", envelope: "c".repeat(15_000) }),
      entry({ messageId: "c2", envelope: "c".repeat(9_000) }),
      entry({ messageId: "t1", envelope: "short" }),
      entry({ messageId: "x1", sender: "carol", envelope: "c".repeat(20_000) }),
      entry({ messageId: "y1", recipient: "dave", envelope: "c".repeat(30_000) }),
    ]);
    assert.deepEqual(store.mailbox.countPendingFrom("bob", "alice"), {
      count: 3,
      chars: 15_000 + 9_000 + 5,
    });
    assert.deepEqual(store.mailbox.countPendingFrom("bob", "mallory"), { count: 0, chars: 0 });
    // Acknowledged entries no longer count.
    store.mailbox.tombstone([{ recipient: "bob", messageId: "c1", ringKey: "80", deletedAt: 5 }]);
    assert.deepEqual(store.mailbox.countPendingFrom("bob", "alice"), { count: 2, chars: 9_005 });
    store.close();
    // The query the quota runs on every put is answered from the index alone.
    const db = new DatabaseSync(path, { readOnly: true });
    const plan = db.prepare(`EXPLAIN QUERY PLAN ${PENDING_FROM_SQL}`).all("bob", "alice") as {
      detail: string;
    }[];
    db.close();
    assert.deepEqual(plan.map((r) => r.detail), [
      "SEARCH mailbox USING COVERING INDEX mailbox_by_sender (recipient=? AND sender=?)",
    ]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("mailbox: a brief fetch's lookups: pending ids from the index, tombstones of many ids in one query", () => {
  const store = new NodeStore(":memory:");
  store.mailbox.insert([entry({ messageId: "m1" }), entry({ messageId: "m2" })]);
  store.mailbox.insert([entry({ messageId: "c1", recipient: "carol" })]);
  store.mailbox.tombstone([{ recipient: "bob", messageId: "m2", ringKey: "80", deletedAt: 5 }]);
  store.mailbox.tombstone([{ recipient: "carol", messageId: "c1", ringKey: "80", deletedAt: 5 }]);
  assert.deepEqual(store.mailbox.pendingIds("bob"), ["m1"]);
  assert.deepEqual(store.mailbox.deletedOf("bob", ["m1", "m2", "c1", "nope"]), ["m2"]);
  assert.deepEqual(store.mailbox.deletedOf("bob", []), []);
  store.close();
});

Deno.test("mailbox: past the retention nothing is stored, read or handed out, and old tombstones are collected", () => {
  const store = new NodeStore(":memory:");
  let now = 1_000_000;
  const maxAge = 1000;
  const margin = 500;
  store.mailbox.retain({
    oldestSeq: () => now - maxAge,
    oldestTombstone: () => now - maxAge - margin,
  });
  const tomb = (messageId: string, deletedAt: number) => ({
    recipient: "bob",
    messageId,
    ringKey: "80",
    deletedAt,
  });
  // Every insert path goes through insert: a replica put, a push, a repair pull, a catch-up.
  assert.equal(
    store.mailbox.insert([
      entry({ messageId: "old", seq: now - maxAge - 1 }),
      entry({ messageId: "new", seq: now - maxAge }),
    ]),
    1,
  );
  assert.equal(store.putItems({ entries: [entry({ messageId: "old2", seq: 5 })] }).offered, 1);
  assert.deepEqual(store.mailbox.pending("bob").map((e) => e.messageId), ["new"]);
  assert.equal(store.mailbox.droppedTooOld, 2);
  // An entry that was kept but is now past the retention is neither pending nor handed out.
  now += 1;
  assert.deepEqual(store.mailbox.pending("bob"), []);
  assert.deepEqual(store.mailbox.entries([["bob", "new"]]), []);
  now -= 1;
  // Acknowledged: tombstones; one older than the horizon deletes its entry but is not kept.
  store.mailbox.insert([entry({ messageId: "a", seq: now }), entry({ messageId: "b", seq: now })]);
  store.mailbox.tombstone([tomb("a", now), tomb("b", now - maxAge - margin - 1)]);
  assert.deepEqual(store.mailbox.pending("bob").map((e) => e.messageId), ["new"]);
  assert.deepEqual(store.mailbox.tombstones([["bob", "a"], ["bob", "b"]]).map((t) => t.messageId), [
    "a",
  ]);
  // Collection takes only the tombstones acknowledged before the horizon it is given.
  store.mailbox.tombstone([tomb("c", now - 10)]);
  assert.equal(store.mailbox.collectTombstones(now - 10), 0);
  assert.equal(store.mailbox.counts().tombstones, 2);
  now += maxAge + margin - 5;
  assert.equal(store.mailbox.collectTombstones(now - maxAge - margin), 1, "c goes, a stays");
  assert.deepEqual(store.mailbox.tombstones([["bob", "a"], ["bob", "c"]]).map((t) => t.messageId), [
    "a",
  ]);
  now += 10;
  assert.equal(store.mailbox.collectTombstones(now - maxAge - margin), 1);
  assert.equal(store.mailbox.counts().tombstones, 0);
  // The collected tombstones' entries cannot come back: they are older than the retention.
  assert.equal(
    store.mailbox.insert([
      entry({ messageId: "a", seq: now - maxAge - margin - 10 }),
      entry({ messageId: "c", seq: now - maxAge - margin - 10 }),
    ]),
    0,
  );
  assert.deepEqual(store.mailbox.pending("bob"), []);
  store.close();
});
