import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { type SyncableFile, WalSync } from "./wal_sync.ts";
import { NodeStore } from "./node_store.ts";
import { MAILBOX_SCHEMA, MailboxStore } from "./mailbox.ts";
import { userRingKey } from "./ring_key.ts";

/** A file whose syncs the test ends, one at a time, and that notes what was written before each. */
class HeldFile implements SyncableFile {
  started: { resolve: () => void; reject: (e: Error) => void; written: number }[] = [];
  written = 0;
  closed = false;
  syncData(): Promise<void> {
    return new Promise((resolve, reject) =>
      this.started.push({ resolve, reject, written: this.written })
    );
  }
  close(): void {
    this.closed = true;
  }
}

const settledSoon = async (p: Promise<unknown>) => {
  let done = false;
  p.then(() => done = true, () => done = true);
  for (let i = 0; i < 5; i++) await Promise.resolve();
  await new Promise((r) => setTimeout(r, 0));
  return done;
};

Deno.test("wal sync: a commit waits for a sync that starts after it; commits meanwhile share the next one", async () => {
  const file = new HeldFile();
  const wal = new WalSync(file);
  file.written = 1;
  const first = wal.sync();
  assert.equal(file.started.length, 1);
  // Written while the first sync runs: not covered by it, so they wait for a second one, shared.
  file.written = 2;
  const second = wal.sync();
  file.written = 3;
  const third = wal.sync();
  assert.equal(file.started.length, 1, "a second sync runs while the first does");
  assert.equal(await settledSoon(second), false);
  file.started[0]!.resolve();
  await first;
  assert.equal(await settledSoon(second), false, "answered by a sync that began before it");
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(file.started.length, 2);
  assert.equal(file.started[1]!.written, 3, "the second sync began after every commit waiting");
  file.started[1]!.resolve();
  await Promise.all([second, third]);
  assert.equal(wal.syncs, 2);
});

Deno.test("wal sync: a failed sync fails the commits waiting for it, and the next sync is tried anew", async () => {
  const file = new HeldFile();
  const wal = new WalSync(file);
  const failing = wal.sync();
  file.started[0]!.reject(new Error("EIO"));
  await assert.rejects(failing, /EIO/);
  const next = wal.sync();
  assert.equal(file.started.length, 2);
  file.started[1]!.resolve();
  await next;
  await wal.close();
  assert.ok(file.closed);
  await assert.rejects(wal.sync(), /closed/);
});

Deno.test("store: a write committed to sync later is visible at once and durable once a later sync ends", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = new HeldFile();
    const store = new NodeStore(`${dir}/node.sqlite`, { walFile: file });
    const entry = {
      recipient: "bob",
      messageId: "m1",
      ringKey: userRingKey("bob"),
      sender: "alice",
      sentAt: Date.now(),
      seq: Date.now(),
      envelope: "sealed",
    };
    assert.equal(store.mailbox.insert([entry], { syncLater: true }), 1);
    const synced = store.mailbox.synced();
    // Committed: another connection (another process) reads it before the sync ends.
    const other = new DatabaseSync(`${dir}/node.sqlite`, { readOnly: true });
    const n = other.prepare("SELECT count(*) AS n FROM mailbox").get() as { n: number };
    other.close();
    assert.equal(n.n, 1);
    assert.equal(await settledSoon(synced), false, "durable before its sync ended");
    assert.equal(file.started.length, 1);
    file.started[0]!.resolve();
    await synced;
    store.mailbox.tombstone([{ ...entry, deletedAt: Date.now() }], { syncLater: true });
    const again = store.mailbox.synced();
    file.started[1]!.resolve();
    await again;
    store.close();
    const check = new DatabaseSync(`${dir}/node.sqlite`, { readOnly: true });
    const t = check.prepare("SELECT count(*) AS n FROM tombstones").get() as { n: number };
    check.close();
    assert.equal(t.n, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("store: a commit to sync later leaves the connection at synchronous=FULL, also one that failed", async () => {
  const dir = await Deno.makeTempDir();
  const db = new DatabaseSync(`${dir}/node.sqlite`);
  try {
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = FULL");
    db.exec(MAILBOX_SCHEMA);
    const level = () =>
      (db.prepare("PRAGMA synchronous").get() as { synchronous: number }).synchronous;
    const file = new HeldFile();
    const mailbox = new MailboxStore(db, () => {}, new WalSync(file));
    const entry = {
      recipient: "bob",
      messageId: "m1",
      ringKey: userRingKey("bob"),
      sender: "alice",
      sentAt: 1,
      seq: 1,
      envelope: "sealed",
    };
    assert.equal(mailbox.insert([entry], { syncLater: true }), 1);
    assert.equal(level(), 2, "FULL again after the commit");
    // A write that fails (an entry without an envelope) stores nothing and still restores FULL.
    const bad = { ...entry, messageId: "m2", envelope: null } as unknown as typeof entry;
    assert.throws(() => mailbox.insert([{ ...entry, messageId: "m3" }, bad], { syncLater: true }));
    assert.equal(level(), 2, "FULL again after a failed commit");
    assert.deepEqual(mailbox.pendingIds("bob"), ["m1"]);
    // A commit starts no sync of its own: the writer asks for one (synced) when it must answer.
    mailbox.insert([{ ...entry, messageId: "m4" }]);
    assert.equal(file.started.length, 0);
  } finally {
    db.close();
    await Deno.remove(dir, { recursive: true });
  }
});
