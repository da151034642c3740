import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { formatDigest, itemHash } from "./digest.ts";
import { type KeyRange, type MailboxEntry, NodeStore } from "./mod.ts";

/** A deterministic pseudo-random generator (the same runs every time). */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const hex40 = (rnd: () => number) =>
  Array.from({ length: 40 }, () => Math.floor(rnd() * 16).toString(16)).join("");

/** The digest of `range` computed from scratch, from the items the store lists. */
function reference(store: NodeStore, range: KeyRange): string {
  const keys = store.itemKeys(range);
  let sum = 0n;
  for (const k of keys) sum += itemHash(k.join("/"));
  return formatDigest(keys.length, sum % (1n << 256n));
}

/** Ranges that cover the cases: whole ring, plain, wrapping, both ends in one bucket. */
function ranges(rnd: () => number): KeyRange[] {
  const out: KeyRange[] = [{ start: "0", end: "0" }];
  for (let i = 0; i < 6; i++) out.push({ start: hex40(rnd), end: hex40(rnd) });
  const a = hex40(rnd);
  const b = a.slice(0, 2) + "f".repeat(38);
  out.push({ start: a, end: b }, { start: b, end: a }, { start: a, end: a });
  return out;
}

function entry(recipient: string, id: string, ringKey: string, seq: number): MailboxEntry {
  return { recipient, messageId: id, ringKey, sender: "alice", sentAt: 1, seq, envelope: "e" };
}

Deno.test("digest: every kind of write keeps the range digests equal to digests from scratch", () => {
  const rnd = random(16);
  const users = Array.from({ length: 40 }, (_, i) => `user${i}`);
  const keyOf = new Map(users.map((u) => [u, hex40(rnd)]));
  const store = new NodeStore(":memory:", { ringKeyOf: (u) => keyOf.get(u) ?? hex40(rnd) });
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)]!;
  const check = (step: string) => {
    for (const r of ranges(random(7))) {
      assert.equal(
        store.digest(r).digest,
        reference(store, r),
        `${step}, range ${r.start}–${r.end}`,
      );
    }
  };
  check("empty store");
  let seq = 1000;
  for (let round = 0; round < 12; round++) {
    const batch: MailboxEntry[] = [];
    for (let i = 0; i < 30; i++) {
      const u = pick(users);
      batch.push(entry(u, `m${Math.floor(rnd() * 200)}`, keyOf.get(u)!, seq++));
    }
    store.mailbox.insert(batch);
    check(`round ${round}: inserts`);
    // A copy with a smaller seq lowers it (an UPDATE of the row).
    store.mailbox.insert(batch.slice(0, 5).map((e) => ({ ...e, seq: e.seq - 500 })));
    check(`round ${round}: seq lowered`);
    store.mailbox.tombstone(
      batch.slice(5, 12).map((e) => ({
        recipient: e.recipient,
        messageId: e.messageId,
        ringKey: e.ringKey,
        deletedAt: 1,
      })),
    );
    check(`round ${round}: tombstones`);
    const u = pick(users);
    const base = { hash: "h", createdAt: 10 + round };
    store.accounts.put({ username: u, ...base });
    store.accounts.put({
      username: u,
      ...base,
      session: { id: `s${round}-0123456789`, issuedAt: round },
    });
    check(`round ${round}: account added and updated`);
    if (round % 3 === 1) {
      store.accounts.put({ username: u, hash: "older", createdAt: 1 }); // replaces it
      store.accounts.delete(pick(users));
      check(`round ${round}: account replaced and deleted`);
    }
    if (round % 4 === 2) {
      store.deleteRingKey(keyOf.get(pick(users))!);
      store.markPrimary({ start: hex40(rnd), end: hex40(rnd) });
      check(`round ${round}: ring key handed off, roles marked`);
    }
    if (round === 9) {
      store.mailbox.dropOutside({ start: hex40(rnd), end: hex40(rnd) });
      store.mailbox.expire(seq - 200);
      check("dropped outside a range, expired");
    }
  }
  // A batch that fails is rolled back whole, its digest changes with it.
  const before = store.digest({ start: "0", end: "0" }).digest;
  const bad = { ...entry("user1", "bad", keyOf.get("user1")!, 1), envelope: null };
  assert.throws(() =>
    store.mailbox.insert([entry("user1", "fine", keyOf.get("user1")!, 1), bad as never])
  );
  assert.equal(store.digest({ start: "0", end: "0" }).digest, before);
  check("after a rolled back insert");
  store.close();
});

Deno.test("digest: two stores agree exactly when they hold the same items, whatever the order", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rnd = random(3);
    const entries = Array.from(
      { length: 300 },
      (_, i) => entry(`u${i % 7}`, `m${i}`, hex40(rnd), i),
    );
    const a = new NodeStore(`${dir}/a.sqlite`);
    const b = new NodeStore(":memory:");
    const whole = { start: "0", end: "0" };
    a.digest(whole); // a builds its buckets first and keeps them on each write
    a.mailbox.insert(entries);
    b.mailbox.insert([...entries].reverse());
    const rs = ranges(random(5));
    for (const r of rs) assert.equal(a.digest(r).digest, b.digest(r).digest);
    // One entry more, or one seq different, and the digests of the ranges holding it differ.
    const extra = entry("u1", "extra", entries[0]!.ringKey, 1);
    b.mailbox.insert([extra]);
    assert.notEqual(a.digest(whole).digest, b.digest(whole).digest);
    a.mailbox.insert([{ ...extra, seq: 2 }]);
    assert.notEqual(a.digest(whole).digest, b.digest(whole).digest);
    a.mailbox.insert([extra]); // the smaller seq wins on both
    assert.equal(a.digest(whole).digest, b.digest(whole).digest);
    // Reopened, a's buckets are built again from its rows: the same digests.
    a.close();
    const reopened = new NodeStore(`${dir}/a.sqlite`);
    for (const r of rs) assert.equal(reopened.digest(r).digest, b.digest(r).digest);
    assert.equal(reopened.digest(whole).count, 301);
    reopened.close();
    b.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("digest: a write by another process to the database file is seen by the next digest", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/node.sqlite`;
    const store = new NodeStore(path);
    const rnd = random(11);
    store.mailbox.insert(Array.from({ length: 20 }, (_, i) => entry("u", `m${i}`, hex40(rnd), i)));
    const whole = { start: "0", end: "0" };
    const before = store.digest(whole);
    assert.equal(before.count, 20);
    // Another connection (an operator's tool, a copy restored in place) adds a row and removes
    // one: no trigger of the store's connection saw it.
    const other = new DatabaseSync(path);
    other.exec("PRAGMA busy_timeout = 5000");
    other.prepare("DELETE FROM mailbox WHERE message_id = 'm0'").run();
    other.close();
    const after = store.digest(whole);
    assert.equal(after.count, 19);
    assert.equal(after.digest, reference(store, whole));
    assert.notEqual(after.digest, before.digest);
    // The store's own writes keep being folded in after the rebuild.
    store.mailbox.insert([entry("u", "late", hex40(rnd), 99)]);
    assert.equal(store.digest(whole).digest, reference(store, whole));
    store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("digest: collecting old tombstones keeps the digests equal to digests from scratch", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rnd = random(3);
    const store = new NodeStore(`${dir}/node.sqlite`, { ringKeyOf: () => hex40(rnd) });
    const users = Array.from({ length: 20 }, (_, i) => [`user${i}`, hex40(rnd)] as const);
    const entries = users.flatMap(([u, key]) =>
      Array.from({ length: 10 }, (_, i) => entry(u, `m${i}`, key, 100 + i))
    );
    store.mailbox.insert(entries);
    const whole = { start: "0", end: "0" };
    assert.equal(store.digest(whole).digest, reference(store, whole)); // built, triggers on
    store.mailbox.tombstone(
      entries.filter((_, i) => i % 3 === 0).map((e, i) => ({
        recipient: e.recipient,
        messageId: e.messageId,
        ringKey: e.ringKey,
        deletedAt: 1000 + i,
      })),
    );
    const before = store.mailbox.counts().tombstones;
    const collected = store.mailbox.collectTombstones(1000 + 30);
    assert.equal(collected, 30);
    assert.equal(store.mailbox.counts().tombstones, before - 30);
    for (const r of ranges(random(5))) {
      assert.equal(store.digest(r).digest, reference(store, r), `range ${r.start}–${r.end}`);
    }
    // And equal to the digest another store builds from the rows on disk.
    const fresh = new NodeStore(`${dir}/node.sqlite`);
    for (const r of ranges(random(5))) assert.equal(fresh.digest(r).digest, store.digest(r).digest);
    fresh.close();
    store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
