import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { IdSpace } from "../chord/mod.ts";
import { NodeStore, userRingKey } from "./mod.ts";
import { MAILBOX_SCHEMA } from "./mailbox.ts";
import { PRESENCE_SCHEMA, type PresenceRecord, PresenceStore } from "./presence.ts";

Deno.test("store: a user's ring key is the key the 160-bit CHORD ring looks up", () => {
  const space = new IdSpace(160);
  for (const name of ["alice", "bob", "Ωmega", "x".repeat(32)]) {
    assert.equal(userRingKey(name), space.toHex(space.idFromKey(`user:${name}`)));
  }
});

Deno.test("store: a database from before accounts were ring records is migrated in place", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/node.sqlite`;
  try {
    // The schema as of user_version 3, with one account.
    const old = new DatabaseSync(path);
    old.exec(`CREATE TABLE accounts (username TEXT PRIMARY KEY, hash TEXT NOT NULL,
      created_at INTEGER NOT NULL, keys TEXT) STRICT`);
    old.exec(MAILBOX_SCHEMA);
    old.exec(`INSERT INTO accounts VALUES ('alice', '$2b$10$${"a".repeat(53)}', 7, NULL)`);
    old.exec("PRAGMA user_version = 3");
    old.close();
    const store = new NodeStore(path);
    assert.equal(store.accounts.get("alice")?.createdAt, 7);
    const whole = { start: "0", end: "0" };
    assert.deepEqual(store.itemKeys(whole), [["a", "alice", "7.aaaaaaaaaaaa"]]);
    // The account moves with its ring key like any record of alice's.
    assert.equal(store.deleteRingKey(userRingKey("alice")), 1);
    assert.equal(store.accounts.get("alice"), undefined);
    store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("store: presence writes are last-writer-wins and expired records mean offline", () => {
  const store = new NodeStore(":memory:");
  const rec = { username: "bob", ringKey: userRingKey("bob"), home: "http://a:1" };
  assert.equal(store.presence.put([{ ...rec, updatedAt: 10, expiresAt: 100 }]), 1);
  assert.equal(
    store.presence.put([{ ...rec, home: "http://old:1", updatedAt: 5, expiresAt: 5 }]),
    0,
  );
  assert.equal(store.presence.get("bob")?.home, "http://a:1");
  assert.deepEqual(store.presence.online(50).map((r) => r.username), ["bob"]);
  assert.deepEqual(store.presence.online(100), []);
  assert.deepEqual(store.presence.expiredBetween(60, 120).map((r) => r.username), ["bob"]);
  assert.equal(store.presence.collect(101), 1);
  store.close();
});

Deno.test("store: copies of one registration merge their state, whatever order they arrive in", () => {
  const store = new NodeStore(":memory:");
  const base = {
    username: "alice",
    hash: `$2b$10$${"a".repeat(53)}`,
    createdAt: 7,
    salt: "s".repeat(22),
  };
  assert.equal(store.accounts.put(base), "added");
  const whole = { start: "0", end: "0" };
  const idBefore = store.itemKeys(whole)[0]![2];
  const first = { ...base, session: { id: "one", issuedAt: 100, refresh: 1 } };
  const second = { ...base, session: { id: "two", issuedAt: 200, refresh: 1 } };
  assert.equal(store.accounts.put(second), "updated");
  // A late copy of an older session changes nothing; the same again is present.
  assert.equal(store.accounts.put(first), "present");
  assert.equal(store.accounts.put(second), "present");
  assert.equal(store.accounts.get("alice")?.session?.id, "two");
  // Of one session, signed out wins and the higher refresh generation.
  assert.equal(
    store.accounts.put({ ...base, session: { id: "two", issuedAt: 200, refresh: 3 } }),
    "updated",
  );
  assert.equal(
    store.accounts.put({ ...base, session: { id: "two", issuedAt: 200, ended: true } }),
    "updated",
  );
  assert.deepEqual(store.accounts.get("alice")?.session, {
    id: "two",
    issuedAt: 200,
    ended: true,
    refresh: 3,
  });
  // The later rekey wins; the salt stays as registered.
  const rekey = (at: number) => ({ salt: "k".repeat(22), hash: base.hash, wrapped: `w${at}`, at });
  store.accounts.put({ ...base, rekeyed: rekey(5) });
  store.accounts.put({ ...base, rekeyed: rekey(3) });
  assert.equal(store.accounts.get("alice")?.rekeyed?.wrapped, "w5");
  assert.equal(store.accounts.get("alice")?.salt, base.salt);
  // Anti-entropy sees the change: the copy's item id carries a stamp of its state.
  assert.notEqual(store.itemKeys(whole)[0]![2], idBefore);
  assert.match(store.itemKeys(whole)[0]![2], /^7\.aaaaaaaaaaaa~[A-Za-z0-9]+$/);
  store.close();
});

Deno.test("store: presence commits skip the fsync, and leave the connection at synchronous=FULL", async () => {
  const dir = await Deno.makeTempDir();
  const db = new DatabaseSync(`${dir}/node.sqlite`);
  try {
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = FULL");
    db.exec(PRESENCE_SCHEMA);
    const level = () =>
      (db.prepare("PRAGMA synchronous").get() as { synchronous: number }).synchronous;
    const presence = new PresenceStore(db);
    const rec = { username: "bob", ringKey: userRingKey("bob"), home: "http://a:1" };
    assert.equal(presence.put([{ ...rec, updatedAt: 10, expiresAt: 100 }]), 1);
    assert.equal(level(), 2, "FULL again after a presence commit");
    // A put that fails (a record without a home) changes nothing and still restores FULL.
    const bad = { ...rec, home: null, updatedAt: 20, expiresAt: 200 } as unknown as PresenceRecord;
    assert.throws(() =>
      presence.put([{ ...rec, username: "carol", updatedAt: 20, expiresAt: 200 }, bad])
    );
    assert.equal(level(), 2, "FULL again after a failed presence commit");
    assert.equal(presence.get("carol"), undefined);
    assert.equal(presence.get("bob")?.updatedAt, 10);
  } finally {
    db.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("store: the addresses a database was served at survive a restart on another port", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/node.sqlite`;
  try {
    const first = new NodeStore(path);
    assert.deepEqual(first.noteOwnAddress("http://127.0.0.1:4001", 1), ["http://127.0.0.1:4001"]);
    assert.deepEqual(first.noteOwnAddress("http://127.0.0.1:4001", 2), ["http://127.0.0.1:4001"]);
    first.close();
    const second = new NodeStore(path);
    assert.deepEqual(second.noteOwnAddress("http://127.0.0.1:4002", 3), [
      "http://127.0.0.1:4001",
      "http://127.0.0.1:4002",
    ]);
    second.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
