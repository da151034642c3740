/**
 * Replication over an in-process ring of real Replicators with real SQLite stores: messages are
 * routed through the wire parsers (a structured clone of every request and response), nodes can
 * crash and join, and copies are counted across every node's database.
 */
import assert from "node:assert/strict";
import { NodeStore } from "../store/mod.ts";
import type { SyncableFile } from "../store/wal_sync.ts";
import { Metrics } from "../telemetry/mod.ts";
import {
  parseReplicationRequest,
  parseReplicationResponse,
  QuotaExceededError,
  type ReplicationRequest,
  Replicator,
  type ReplicatorOptions,
  type RingAccess,
  SYNC_SKIP_MAX_MS,
  TOMBSTONE_GC_EVERY_MS,
  TOMBSTONE_MARGIN_MS,
  TooOldError,
  UnavailableError,
  UsernameTakenError,
} from "./mod.ts";

const hex = (n: number) => n.toString(16).padStart(2, "0");

/** A fixed ring on an 8-bit id space whose membership the test controls. */
class TestRing {
  live = new Map<
    string,
    { id: number; replicator: Replicator; store: NodeStore; metrics?: Metrics }
  >();
  /** The clock of every node added from now on. */
  now: () => number = Date.now;
  /** Nodes still in the ring but unreachable (a partition the ring has not noticed yet). */
  unreachable = new Set<string>();
  /**
   * A partition the ring has noticed: each node sees (and reaches) only the nodes on its side
   * (side 0 unless set here), as its own ring.
   */
  side = new Map<string, number>();
  /** Nodes that take requests and never answer (SIGSTOP): calls to them hang. */
  frozen = new Set<string>();
  /** Nodes membership suspects (they missed their last hello). */
  suspect = new Set<string>();
  /** Called when a request reaches a frozen node. */
  onHang: () => void = () => {};
  /** Awaited before a node handles a request it was sent (a test may hold requests here). */
  beforeHandle: (to: string, request: ReplicationRequest) => Promise<void> = () =>
    Promise.resolve();

  ringKeyOf = (username: string) =>
    hex([...username].reduce((h, c) => (h * 31 + c.charCodeAt(0)) % 256, 7));

  sorted(viewer?: string) {
    const side = (a: string) => this.side.get(a) ?? 0;
    return [...this.live.entries()]
      .filter(([a]) => viewer === undefined || side(a) === side(viewer))
      .sort((a, b) => a[1].id - b[1].id).map(([address, n]) => ({ address, id: n.id }));
  }

  /** Index in `ids` (sorted) of the node that will be the primary of `username`. */
  ownerIndexOfIds(ids: number[], username: string) {
    const key = parseInt(this.ringKeyOf(username), 16);
    const i = [...ids].sort((a, b) => a - b).findIndex((id) => id >= key);
    return i === -1 ? 0 : i;
  }

  ownerIndex(key: number, viewer?: string) {
    const nodes = this.sorted(viewer);
    const i = nodes.findIndex((n) => n.id >= key);
    return i === -1 ? 0 : i;
  }

  access(address: string, id: number): RingAccess {
    const around = (offset: number) => {
      const nodes = this.sorted(address);
      const i = nodes.findIndex((n) => n.address === address);
      return nodes[(i + offset + nodes.length * 4) % nodes.length]!;
    };
    return {
      self: address,
      ringKeyOf: this.ringKeyOf,
      isPrimaryFor: (key) =>
        this.sorted(address)[this.ownerIndex(parseInt(key, 16), address)]!.address === address,
      primaryRange: () => ({ start: hex(around(-1).id), end: hex(id) }),
      successors: () =>
        this.sorted(address).map((_, i) => around(i + 1).address).filter((a) => a !== address),
      predecessorChain: (n) =>
        Promise.resolve(
          Array.from({ length: n }, (_, i) => around(-(i + 1))).map((m) => ({
            address: m.address,
            id: hex(m.id),
          })),
        ),
      replicaSet: (key, k) => {
        const nodes = this.sorted(address);
        const i = this.ownerIndex(parseInt(key, 16), address);
        return Promise.resolve([
          ...new Set(
            Array.from({ length: k + 1 }, (_, j) => nodes[(i + j) % nodes.length]!.address),
          ),
        ]);
      },
    };
  }

  /** Adds node `id`, with an empty store or (a restart from its old disk) the one it had. */
  add(id: number, store = new NodeStore(":memory:", { ringKeyOf: this.ringKeyOf })) {
    const address = `node-${hex(id)}`;
    const metrics = new Metrics();
    const replicator = new Replicator({
      store,
      ring: this.access(address, id),
      call: async (to, request) => {
        const peer = this.live.get(to);
        const across = (this.side.get(to) ?? 0) !== (this.side.get(address) ?? 0);
        if (!peer || this.unreachable.has(to) || across) throw new Error(`${to} is down`);
        if (this.frozen.has(to)) {
          this.onHang();
          return await new Promise<never>(() => {});
        }
        const req = parseReplicationRequest(structuredClone(request));
        await this.beforeHandle(to, req);
        const res = await peer.replicator.handle(req);
        // Killed while it worked on the request: its answer never leaves (kill -9).
        if (this.live.get(to) !== peer) throw new Error(`${to} closed the connection`);
        return parseReplicationResponse(structuredClone(res));
      },
      metrics,
      log: () => {},
      isSuspect: (a) => this.suspect.has(a),
      now: () => this.now(),
    }, { k: 2, w: 2, writeDeadlineMs: 2000 });
    this.live.set(address, { id, replicator, store, metrics });
    return replicator;
  }

  crash(id: number) {
    this.live.delete(`node-${hex(id)}`);
  }

  /** How many nodes hold a (non-tombstoned) copy of each message id. */
  copies(): Map<string, number> {
    const count = new Map<string, number>();
    for (const { store } of this.live.values()) {
      for (const [kind, , id] of store.mailbox.itemKeys({ start: "00", end: "00" })) {
        if (kind === "m") count.set(id, (count.get(id) ?? 0) + 1);
      }
    }
    return count;
  }

  async repair(rounds = 3) {
    for (let i = 0; i < rounds; i++) {
      for (const n of [...this.live.values()]) await n.replicator.repairRound();
    }
  }
}

const message = (i: number, recipient = "bob") => ({
  recipient,
  messageId: `message-${String(i).padStart(4, "0")}`,
  sender: "alice",
  sentAt: Date.now() - i,
  envelope: `sealed-${i}`,
});

Deno.test("replication: an acknowledged write is on K+1 nodes and reads come back in order", async () => {
  const ring = new TestRing();
  const nodes = [10, 60, 110, 160, 210].map((id) => ring.add(id));
  await nodes[0]!.storeMessages([0, 1, 2, 3, 4].map((i) => message(i)));
  for (const [, n] of ring.copies()) assert.ok(n >= 2, "fewer than W copies after the ack");
  await ring.repair(1);
  assert.deepEqual([...ring.copies().values()], [3, 3, 3, 3, 3]);
  // Any node reads the same pending list, in coordinator order (not the sender's clock).
  const pending = await nodes[3]!.fetchPending("bob");
  assert.deepEqual(
    pending.map((e) => e.messageId),
    [0, 1, 2, 3, 4].map((i) => message(i).messageId),
  );
});

Deno.test("replication: acknowledged messages disappear from every copy and stay gone", async () => {
  const ring = new TestRing();
  const nodes = [10, 60, 110, 160, 210].map((id) => ring.add(id));
  await nodes[1]!.storeMessages([0, 1, 2].map((i) => message(i)));
  await nodes[2]!.acknowledge("bob", [message(0).messageId, message(1).messageId]);
  await ring.repair(2);
  assert.deepEqual([...ring.copies().keys()], [message(2).messageId]);
  // A duplicate write of an acknowledged message does not bring it back.
  await nodes[4]!.storeMessages([message(0)]);
  await ring.repair(2);
  assert.deepEqual((await nodes[0]!.fetchPending("bob")).map((e) => e.messageId), [
    message(2).messageId,
  ]);
});

/**
 * Five nodes; messages 0–2 to bob stored and repaired; bob's primary crashes and messages 0 and 1
 * are acknowledged through another node meanwhile. Returns the crashed primary, its old disk
 * (still holding all three as pending) and the node that read.
 */
async function ackWhileBobsPrimaryIsDown(ring: TestRing) {
  const nodes = [10, 60, 110, 160, 210].map((id) => ring.add(id));
  await nodes[0]!.storeMessages([0, 1, 2].map((i) => message(i)));
  await ring.repair(1);
  const primary = ring.sorted()[ring.ownerIndex(parseInt(ring.ringKeyOf("bob"), 16))]!;
  const oldDisk = ring.live.get(primary.address)!.store;
  ring.crash(primary.id);
  const reader = [...ring.live.values()][0]!.replicator;
  await reader.acknowledge("bob", [message(0).messageId, message(1).messageId]);
  return { primary, oldDisk, reader };
}

Deno.test("replication: a primary back from an old disk returns nothing acknowledged while it was down", async () => {
  const ring = new TestRing();
  const { primary, oldDisk, reader } = await ackWhileBobsPrimaryIsDown(ring);
  // Back with its old data, before any repair round: its own copies are stale.
  ring.add(primary.id, oldDisk);
  assert.equal(oldDisk.mailbox.countPending("bob"), 3);
  assert.deepEqual((await reader.fetchPending("bob")).map((e) => e.messageId), [
    message(2).messageId,
  ]);
});

Deno.test("replication: acks that come together share one commit, each with its own receipts", async () => {
  const ring = new TestRing();
  const nodes = [10, 60, 110].map((id) => ring.add(id));
  await nodes[0]!.storeMessages([0, 1, 2, 3, 4, 5].map((i) => message(i)));
  const ids = (is: number[]) => is.map((i) => message(i).messageId);
  const receipts = await Promise.all(
    [[0, 1], [2, 3], [4, 5]].map((is) => nodes[1]!.acknowledge("bob", ids(is))),
  );
  assert.deepEqual(receipts.map((r) => r.map((x) => x.messageId)), [
    ids([0, 1]),
    ids([2, 3]),
    ids([4, 5]),
  ]);
  assert.ok(receipts.flat().every((r) => r.sender === "alice"));
  assert.equal(ring.copies().size, 0, "acknowledged on every copy");
  const commits = [...ring.live.values()].reduce(
    (sum, n) => sum + n.metrics!.get("p2pchat_mailbox_ack_commits_total"),
    0,
  );
  assert.ok(commits < 3, `${commits} commits for 3 acks`);
});

Deno.test("replication: a message sent longer ago than the retention is refused and stored nowhere", async () => {
  const ring = new TestRing();
  const nodes = [10, 60, 110].map((id) => ring.add(id));
  const day = 24 * 3_600_000;
  // A client's retry, weeks late: its tombstone may have been collected, so it is refused.
  await assert.rejects(
    nodes[0]!.storeMessages([message(1), { ...message(2), sentAt: Date.now() - 31 * day }]),
    TooOldError,
  );
  assert.equal(ring.copies().size, 0);
  await nodes[0]!.storeMessages([{ ...message(1), sentAt: Date.now() - 29 * day }]);
  assert.equal(ring.copies().get(message(1).messageId), 3);
});

Deno.test("replication: old tombstones are collected, and a server back from an old disk brings nothing back", async () => {
  const ring = new TestRing();
  let now = Date.now();
  ring.now = () => now;
  const { primary, oldDisk, reader } = await ackWhileBobsPrimaryIsDown(ring);
  // On the K + 1 servers that hold bob's key.
  const tombstones = () =>
    [...ring.live.values()].reduce((sum, n) => sum + n.store.mailbox.counts().tombstones, 0);
  const collected = () =>
    [...ring.live.values()].reduce(
      (sum, n) => sum + n.metrics!.get("p2pchat_mailbox_tombstones_collected_total"),
      0,
    );
  await ring.repair(1);
  assert.equal(tombstones(), 6);
  // Past the retention the entries expire; their tombstones stay for the margin.
  const day = 24 * 3_600_000;
  now += 30 * day + 3_600_000;
  await ring.repair(1);
  assert.equal(ring.copies().size, 0, "message 2 expired");
  assert.equal(tombstones(), 6);
  now += TOMBSTONE_MARGIN_MS + TOMBSTONE_GC_EVERY_MS;
  await ring.repair(1);
  assert.equal(tombstones(), 0, "collected on every server");
  assert.equal(collected(), 6);
  // The old primary comes back with the messages pending and without their tombstones: none is
  // returned, none is copied to another server, none comes back as a copy.
  ring.add(primary.id, oldDisk);
  assert.deepEqual(await reader.fetchPending("bob"), []);
  await ring.repair(3);
  assert.equal(ring.copies().size, 0);
  assert.deepEqual(await reader.fetchPending("bob"), []);
});

Deno.test("replication: after K nodes crash at once, every message survives and K+1 copies return", async () => {
  const ring = new TestRing();
  const nodes = [10, 60, 110, 160, 210].map((id) => ring.add(id));
  const users = ["bob", "carol", "dave", "erin", "frank", "grace"];
  const all = users.flatMap((u, j) => [0, 1, 2, 3].map((i) => message(j * 10 + i, u)));
  await nodes[0]!.storeMessages(all);
  await ring.repair(1);
  ring.crash(60);
  ring.crash(110);
  await ring.repair(3);
  const copies = ring.copies();
  assert.equal(copies.size, all.length, "a message was lost");
  for (const [id, n] of copies) assert.equal(n, 3, `${id} has ${n} copies`);
  for (const u of users) assert.equal((await nodes[4]!.fetchPending(u)).length, 4);
});

Deno.test("replication: a joining node receives its range and others drop what they no longer hold", async () => {
  const ring = new TestRing();
  [10, 110, 210].map((id) => ring.add(id));
  const first = ring.live.get("node-0a")!.replicator;
  const all = ["bob", "carol", "dave", "erin", "frank", "grace", "heidi"].map((u, i) =>
    message(i, u)
  );
  await first.storeMessages(all);
  await ring.repair(1);
  for (const id of [60, 160]) ring.add(id);
  await ring.repair(4);
  assert.deepEqual([...new Set(ring.copies().values())], [3]);
  assert.equal(ring.copies().size, all.length);
});

Deno.test("replication: a write that cannot reach W copies is refused, never acknowledged", async () => {
  const ring = new TestRing();
  const nodes = [10, 60, 110].map((id) => ring.add(id));
  const owner = ring.sorted()[ring.ownerIndex(parseInt(ring.ringKeyOf("bob"), 16))]!.address;
  for (const { address } of ring.sorted()) if (address !== owner) ring.unreachable.add(address);
  const viaOwner = ring.live.get(owner)!.replicator;
  await assert.rejects(viaOwner.storeMessages([message(1)]), UnavailableError);
  // Once one replica is reachable again, the retried write is acknowledged with 2 copies.
  ring.unreachable.delete(ring.sorted().find((n) => n.address !== owner)!.address);
  await nodes[0]!.storeMessages([message(1)]);
  assert.ok(ring.copies().get(message(1).messageId)! >= 2);
});

Deno.test("replication: with both replicas of a primary frozen, writes go to live successors once they are suspect", async () => {
  const ring = new TestRing();
  [10, 60, 110, 160, 210].map((id) => ring.add(id));
  const nodes = ring.sorted();
  const p = ring.ownerIndex(parseInt(ring.ringKeyOf("bob"), 16));
  const primary = ring.live.get(nodes[p]!.address)!.replicator;
  const frozen = [1, 2].map((j) => nodes[(p + j) % nodes.length]!.address);
  for (const a of frozen) ring.frozen.add(a);
  // In flight when they freeze: the write waits on them only until they turn suspect.
  const reached = new Promise<void>((r) => ring.onHang = r);
  const inFlight = primary.storeMessages([message(1)]);
  await reached;
  for (const a of frozen) ring.suspect.add(a);
  await inFlight;
  // Sent while they are suspect: the write never waits on them.
  await primary.storeMessages([message(2)]);
  for (const id of [message(1).messageId, message(2).messageId]) {
    const holders = [...ring.live].filter(([a, n]) =>
      !frozen.includes(a) && n.store.mailbox.entries([["bob", id]]).length > 0
    );
    assert.ok(holders.length >= 2, `${id} is on ${holders.length} live nodes, fewer than W`);
  }
});

/** A 3-node ring whose primary for bob's mailbox runs with `options` (quotas live there). */
function bobsPrimaryWith(options: ReplicatorOptions) {
  const ring = new TestRing();
  [10, 60, 110].map((id) => ring.add(id));
  const primary = ring.sorted()[ring.ownerIndex(parseInt(ring.ringKeyOf("bob"), 16))]!;
  const entry = ring.live.get(primary.address)!;
  entry.replicator = new Replicator({
    store: entry.store,
    ring: ring.access(primary.address, primary.id),
    call: (to, r) => ring.live.get(to)!.replicator.handle(r),
    metrics: new Metrics(),
    log: () => {},
  }, { writeDeadlineMs: 500, ...options });
  return Object.assign(entry, { ring });
}

Deno.test("replication: a full mailbox refuses new messages with a clear error", async () => {
  // Quotas are enforced by the primary; route bob's writes to a primary with quota 2.
  const entry = bobsPrimaryWith({ quotaPerRecipient: 2, quotaPerSender: 2 });
  await entry.replicator.storeMessages([message(1), message(2)]);
  await assert.rejects(entry.replicator.storeMessages([message(3)]), /Mailbox of "bob" is full/);
  assert.equal((await entry.replicator.fetchPending("bob")).length, 2);
});

Deno.test("replication: one sender cannot fill a mailbox; others can still write to it", async () => {
  const entry = bobsPrimaryWith({ quotaPerRecipient: 100, quotaPerSender: 3 });
  const from = (sender: string, i: number) => ({
    ...message(i),
    sender,
    messageId: `${sender}-${i}-msg`,
  });
  await entry.replicator.storeMessages([
    from("mallory", 1),
    from("mallory", 2),
    from("mallory", 3),
  ]);
  await assert.rejects(
    entry.replicator.storeMessages([from("mallory", 4)]),
    /already holds 3 messages from you/,
  );
  await entry.replicator.storeMessages([from("alice", 1)]);
  assert.equal((await entry.replicator.fetchPending("bob")).length, 4);
  // Once bob has read one, mallory has room for one more, at once.
  await entry.replicator.acknowledge("bob", ["mallory-1-msg"]);
  await entry.replicator.storeMessages([from("mallory", 4)]);
  await assert.rejects(
    entry.replicator.storeMessages([from("mallory", 5)]),
    /already holds 3 messages from you/,
  );
});

Deno.test("replication: file chunks from one sender stop at its byte quota with quota_exceeded, storing nothing", async () => {
  const entry = bobsPrimaryWith({ senderBytes: 50_000 });
  const chunk = (sender: string, i: number) => ({
    ...message(i),
    sender,
    messageId: `${sender}-chunk-${i}`,
    envelope: "c".repeat(15_000),
  });
  await entry.replicator.storeMessages([chunk("alice", 1), chunk("alice", 2), chunk("alice", 3)]);
  const refused = await entry.replicator.storeMessages([chunk("alice", 4), chunk("alice", 5)])
    .then(() => null, (err) => err);
  assert.ok(refused instanceof QuotaExceededError, String(refused));
  assert.match(
    refused.message,
    /The mailbox of "bob" already holds 0\.0 MB from you; .* at most 0\.0 MB there: send this when "bob" is online/,
  );
  // Small messages are not counted against it; another sender has its own share.
  await entry.replicator.storeMessages([{ ...message(9), messageId: "alice-text", envelope: "t" }]);
  await entry.replicator.storeMessages([chunk("carol", 1), chunk("carol", 2), chunk("carol", 3)]);
  const ids = (await entry.replicator.fetchPending("bob")).map((e) => e.messageId).sort();
  assert.deepEqual(ids, [
    "alice-chunk-1",
    "alice-chunk-2",
    "alice-chunk-3",
    "alice-text",
    "carol-chunk-1",
    "carol-chunk-2",
    "carol-chunk-3",
  ]);
  // Nothing of the refused put reached any copy.
  assert.equal(entry.ring.copies().get("alice-chunk-4"), undefined);
  // Once bob read them, alice has room again at once.
  await entry.replicator.acknowledge("bob", ["alice-chunk-1", "alice-chunk-2"]);
  await entry.replicator.storeMessages([chunk("alice", 4), chunk("alice", 5)]);
});

Deno.test("replication: chunks sent at once by one sender share commits without passing its byte quota", async () => {
  const entry = bobsPrimaryWith({ senderBytes: 100_000 });
  const other = [...entry.ring.live.values()].find((n) => n !== entry)!.replicator;
  const chunk = (i: number) => ({
    ...message(i),
    messageId: `alice-chunk-${String(i).padStart(2, "0")}`,
    envelope: "c".repeat(15_000),
  });
  // Twenty chunks of 15,000 characters in flight at once, on the primary and through another
  // server: only six fit in 100,000 characters, whichever commits they share.
  const results = await Promise.allSettled(
    Array.from(
      { length: 20 },
      (_, i) => (i % 2 ? other : entry.replicator).storeMessages([chunk(i)]),
    ),
  );
  const accepted = results.filter((r) => r.status === "fulfilled").length;
  assert.equal(accepted, 6);
  for (const r of results) {
    if (r.status === "rejected") {
      assert.ok(r.reason instanceof QuotaExceededError, String(r.reason));
    }
  }
  assert.equal((await entry.replicator.fetchPending("bob")).length, 6);
});

Deno.test("replication: concurrent sends share commits yet each is answered alone, in order", async () => {
  const entry = bobsPrimaryWith({ quotaPerRecipient: 100, quotaPerSender: 3 });
  const other = [...entry.ring.live.values()].find((n) => n !== entry)!.replicator;
  const from = (sender: string, i: number) => ({
    ...message(i),
    sender,
    messageId: `${sender}-${i}-msg`,
  });
  // Sent without waiting, on the primary and through another server (which gathers its puts
  // for the primary into one request): they meet in shared commits.
  const results = await Promise.allSettled([
    ...[1, 2, 3, 4, 5].map((i) => entry.replicator.storeMessages([from("mallory", i)])),
    ...[1, 2, 3].map((i) => other.storeMessages([from("alice", i)])),
  ]);
  // The sender quota counts the puts before it in the same commit: mallory's 4th and 5th fail.
  assert.deepEqual(results.map((r) => r.status), [
    "fulfilled",
    "fulfilled",
    "fulfilled",
    "rejected",
    "rejected",
    "fulfilled",
    "fulfilled",
    "fulfilled",
  ]);
  assert.match(
    String((results[3] as PromiseRejectedResult).reason),
    /already holds 3 messages from you/,
  );
  const pending = (await entry.replicator.fetchPending("bob")).map((e) => e.messageId);
  assert.deepEqual(
    pending.filter((id) => id.startsWith("mallory")),
    [1, 2, 3].map((i) => `mallory-${i}-msg`),
  );
  assert.deepEqual(
    pending.filter((id) => id.startsWith("alice")),
    [1, 2, 3].map((i) => `alice-${i}-msg`),
  );
  const copies = entry.ring.copies();
  for (const id of pending) assert.ok(copies.get(id)! >= 2, `${id} acknowledged on fewer than W`);
});

Deno.test("replication: a put the group commit's transaction cannot take fails alone; the others in the batch are acknowledged", async () => {
  const entry = bobsPrimaryWith({});
  // Not a valid row (sent_at is an INTEGER column of a STRICT table): its insert throws.
  const bad = { ...message(2), sentAt: "yesterday" as unknown as number };
  const results = await Promise.allSettled(
    [[message(1)], [bad], [message(3)]].map((m) => entry.replicator.storeMessages(m)),
  );
  assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
  const copies = entry.ring.copies();
  assert.equal(copies.get(message(2).messageId), undefined, "the failed put is stored nowhere");
  for (const i of [1, 3]) assert.ok(copies.get(message(i).messageId)! >= 2);
  assert.deepEqual(
    (await entry.replicator.fetchPending("bob")).map((e) => e.messageId),
    [1, 3].map((i) => message(i).messageId),
  );
});

Deno.test("replication: a primary killed during a group commit leaves no acknowledged message lost or doubled", async () => {
  const ring = new TestRing();
  [10, 60, 110, 160].map((id) => ring.add(id));
  const nodes = ring.sorted();
  const p = ring.ownerIndex(parseInt(ring.ringKeyOf("bob"), 16));
  const primary = nodes[p]!;
  const sender = ring.live.get(nodes[(p + 3) % nodes.length]!.address)!.replicator;
  // Acknowledged before the crash.
  await sender.storeMessages([message(0)]);
  // The primary's next group commit is stored on the primary, and the primary is killed before
  // its replica requests leave (they are held, then dropped): nothing of that batch may have
  // been acknowledged, and its senders must get their messages stored elsewhere.
  const drop: (() => void)[] = [];
  let killed = false;
  const reached = new Promise<void>((r) => {
    ring.beforeHandle = async (_to, req) => {
      const batch = req.type === "put" && !req.coordinate &&
        req.entries.some((e) => e.messageId !== message(0).messageId);
      if (!batch || killed) return;
      r();
      await new Promise<void>((_, reject) =>
        drop.push(() => reject(new Error("never sent: its sender was killed")))
      );
    };
  });
  const sends = [1, 2, 3, 4, 5, 6].map((i) => sender.storeMessages([message(i)]));
  await reached;
  // Give an answer every chance to leave (none may while the replicas lack the batch).
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
  const killedStore = ring.live.get(primary.address)!.store;
  ring.crash(primary.id);
  killed = true;
  for (const d of drop) d();
  const results = await Promise.allSettled(sends);
  const acked = [0, ...[1, 2, 3, 4, 5, 6].filter((_, j) => results[j]!.status === "fulfilled")];
  assert.ok(
    [1, 2, 3, 4, 5, 6].some((i) =>
      killedStore.mailbox.entries([["bob", message(i).messageId]]).length
    ),
    "the killed primary had stored the batch it was replicating",
  );
  // The senders retried on the next primary: every send is acknowledged in the end.
  assert.equal(acked.length, 7, JSON.stringify(results.map((r) => r.status)));
  for (const i of acked) {
    assert.ok(ring.copies().get(message(i).messageId)! >= 2, `message ${i} on fewer than W`);
  }
  await ring.repair();
  const pending = (await sender.fetchPending("bob")).map((e) => e.messageId);
  assert.deepEqual([...pending].sort(), acked.map((i) => message(i).messageId).sort());
  for (const i of acked) assert.equal(ring.copies().get(message(i).messageId), 3);
});

Deno.test("replication: a node that is not the primary answers with the current replica set", async () => {
  const ring = new TestRing();
  [10, 60, 110, 160, 210].map((id) => ring.add(id));
  const ringKey = ring.ringKeyOf("bob");
  const nodes = ring.sorted();
  const owner = ring.ownerIndex(parseInt(ringKey, 16));
  const other = nodes[(owner + 2) % nodes.length]!;
  const res = await ring.live.get(other.address)!.replicator.handle({
    v: 1,
    type: "fetch",
    recipient: "bob",
    ringKey,
    coordinate: true,
  });
  assert.equal(res.type === "error" && res.code, "not_responsible");
  assert.deepEqual(
    res.type === "error" && res.replicaSet,
    [0, 1, 2].map((j) => nodes[(owner + j) % nodes.length]!.address),
  );
});

const account = (username: string, createdAt = 1, salt = "a") => ({
  username,
  hash: "$2b$10$" + salt.repeat(53),
  createdAt,
});

/** How many nodes hold a copy of each username, and which registrations (createdAt) exist. */
function accountCopies(ring: TestRing): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const { store } of ring.live.values()) {
    for (const u of store.accounts.usernames()) {
      out.set(u, [...(out.get(u) ?? []), store.accounts.get(u)!.createdAt]);
    }
  }
  return out;
}

Deno.test("accounts: a registration is on K+1 nodes, a second one of the name is refused, a retry is not", async () => {
  const ring = new TestRing();
  const nodes = [10, 60, 110, 160, 210].map((id) => ring.add(id));
  await nodes[0]!.registerAccount(account("alice"));
  assert.ok(accountCopies(ring).get("alice")!.length >= 2, "acknowledged with fewer than W copies");
  await ring.repair(1);
  assert.deepEqual(accountCopies(ring).get("alice"), [1, 1, 1]);
  // The same registration again (a client retry after a lost answer) succeeds.
  await nodes[3]!.registerAccount(account("alice"));
  await assert.rejects(nodes[4]!.registerAccount(account("alice", 2, "b")), UsernameTakenError);
  assert.deepEqual((await nodes[2]!.getAccount("alice"))?.createdAt, 1);
  assert.equal(await nodes[2]!.getAccount("nobody"), undefined);
  // Only K+1 nodes hold it: the registry is not copied to every server.
  assert.equal(ring.live.size - accountCopies(ring).get("alice")!.length, 2);
});

Deno.test("accounts: after K nodes crash at once every account is readable and back to K+1 copies", async () => {
  const ring = new TestRing();
  const nodes = [10, 60, 110, 160, 210].map((id) => ring.add(id));
  const users = ["bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan"];
  for (const u of users) await nodes[0]!.registerAccount(account(u));
  await ring.repair(1);
  ring.crash(60);
  ring.crash(160);
  for (const u of users) assert.equal((await nodes[2]!.getAccount(u))?.username, u);
  await ring.repair(3);
  for (const u of users) assert.equal(accountCopies(ring).get(u)!.length, 3, u);
});

Deno.test("accounts: a new primary that lacks the account reads it from its successors", async () => {
  const ring = new TestRing();
  [10, 110, 210].map((id) => ring.add(id));
  await ring.live.get("node-0a")!.replicator.registerAccount(account("alice"));
  // A node joins right before alice's key and becomes its primary, before any repair round.
  const key = parseInt(ring.ringKeyOf("alice"), 16);
  const joiner = ring.add(key === 0 ? 255 : key);
  assert.equal(accountCopies(ring).get("alice")!.length, 3);
  assert.equal((await joiner.getAccount("alice"))?.username, "alice");
  await assert.rejects(joiner.registerAccount(account("alice", 9, "z")), UsernameTakenError);
});

Deno.test("accounts: two registrations of one name from a partition converge to the older on every copy", async () => {
  const ring = new TestRing();
  [10, 60, 110, 160, 210].map((id) => ring.add(id));
  const [a, b, c] = [...ring.live.values()].map((n) => n.store);
  a!.accounts.put(account("alice", 5, "x"));
  b!.accounts.put(account("alice", 3, "y"));
  c!.accounts.put(account("alice", 5, "x"));
  await ring.repair(4);
  const copies = accountCopies(ring).get("alice")!;
  assert.deepEqual(copies, [3, 3, 3]);
});

Deno.test("presence: the newest session wins, an old home's logout does not hide it, changes are reported", async () => {
  const ring = new TestRing();
  [10, 60, 110, 160, 210].map((id) => ring.add(id));
  const changes: string[] = [];
  for (const [address, n] of ring.live) {
    n.replicator = new Replicator({
      store: n.store,
      ring: ring.access(address, n.id),
      call: (to, r) => ring.live.get(to)!.replicator.handle(r),
      metrics: new Metrics(),
      log: () => {},
      isLive: (a) => ring.live.has(a),
    }, { k: 2, w: 2, writeDeadlineMs: 2000 });
    n.replicator.onPresenceChange((r, online) => changes.push(`${r.username}@${r.home}:${online}`));
  }
  const [a, b] = [...ring.live.values()].map((n) => n.replicator);
  await a!.publishPresence([{ username: "alice", online: true }], 60_000);
  assert.equal((await b!.getPresence("alice"))?.home, "node-0a");
  // alice logs in on node-3c; then node-0a's late "offline" arrives and must change nothing.
  await b!.publishPresence([{ username: "alice", online: true }], 60_000);
  await a!.publishPresence([{ username: "alice", online: false }], 60_000);
  const now = await a!.getPresence("alice");
  assert.equal(now?.home, "node-3c");
  assert.ok(now!.expiresAt > Date.now(), "the newer session must still be online");
  assert.deepEqual(changes, ["alice@node-0a:true", "alice@node-3c:true"]);
  // Her home server crashes: the primary's sweep reports her offline.
  ring.crash(60);
  for (const n of ring.live.values()) await n.replicator.repairRound();
  assert.equal(changes.at(-1), "alice@node-3c:false");
  assert.ok((await a!.getPresence("alice"))!.expiresAt <= Date.now());
});

Deno.test("presence: a refresh of many users sends one request per primary, and a primary that moved still gets its records", async () => {
  const ring = new TestRing();
  [10, 60, 110, 160, 210].map((id) => ring.add(id));
  const puts: number[] = [];
  const changes: string[] = [];
  for (const [address, n] of ring.live) {
    n.replicator = new Replicator({
      store: n.store,
      ring: ring.access(address, n.id),
      call: (to, r) => {
        if (r.type === "presence_put" && r.coordinate) puts.push(r.records.length);
        return ring.live.get(to)!.replicator.handle(r);
      },
      metrics: new Metrics(),
      log: () => {},
      isLive: (a) => ring.live.has(a),
    }, { k: 2, w: 2, writeDeadlineMs: 2000 });
    n.replicator.onPresenceChange((r, online) => {
      if (online) changes.push(r.username);
    });
  }
  const [a, b] = [...ring.live.values()].map((n) => n.replicator);
  const users = Array.from({ length: 200 }, (_, i) => `user${i}`);
  await a!.publishPresence(users.map((username) => ({ username, online: true })), 60_000);
  // At most one request to each other server (the first node's own share is handled in place).
  assert.ok(puts.length <= 4, `${puts.length} presence requests for 200 users`);
  for (const u of users) assert.equal((await b!.getPresence(u))?.home, "node-0a", u);
  assert.deepEqual([...changes].sort(), [...users].sort(), "each user reported online once");
  // A primary leaves: the remembered primaries are wrong for its keys; the refresh still lands.
  ring.crash(60);
  const before = Date.now();
  await a!.publishPresence(users.map((username) => ({ username, online: true })), 60_000);
  for (const u of users) {
    const record = await b!.getPresence(u);
    assert.ok(record && record.updatedAt >= before && record.expiresAt > Date.now(), u);
  }
});

Deno.test("presence: a record that is not refreshed expires and is reported offline", async () => {
  const ring = new TestRing();
  const changes: string[] = [];
  let now = Date.now();
  const store = new NodeStore(":memory:", { ringKeyOf: ring.ringKeyOf });
  ring.live.set("node-0a", {
    id: 10,
    store,
    replicator: new Replicator({
      store,
      ring: ring.access("node-0a", 10),
      call: () => Promise.reject(new Error("alone")),
      metrics: new Metrics(),
      log: () => {},
      now: () => now,
    }),
  });
  const solo = ring.live.get("node-0a")!.replicator;
  solo.onPresenceChange((r, online) => changes.push(`${r.username}:${online}`));
  await solo.publishPresence([{ username: "bob", online: true }], 30);
  await solo.repairRound();
  assert.deepEqual(changes, ["bob:true"]);
  now += 29;
  await solo.repairRound();
  assert.deepEqual(changes, ["bob:true"], "still online before its time to live runs out");
  now += 2;
  await solo.repairRound();
  assert.deepEqual(changes, ["bob:true", "bob:false"]);
});

Deno.test("replication messages: accounts must carry a bcrypt hash, account item keys a version", () => {
  const ok = { v: 1, type: "account_put", account: account("alice"), coordinate: true };
  assert.deepEqual(parseReplicationRequest(ok), ok);
  assert.throws(
    () =>
      parseReplicationRequest({
        ...ok,
        account: { ...account("alice"), hash: "plaintext-password" },
      }),
    /account\.hash/,
  );
  assert.throws(
    () => parseReplicationResponse({ v: 1, type: "keys", items: [["a", "alice", "m1'; --"]] }),
    /items/,
  );
  assert.deepEqual(
    parseReplicationResponse({ v: 1, type: "keys", items: [["a", "alice", "5.aaaaaaaaaaaa"]] }),
    { v: 1, type: "keys", items: [["a", "alice", "5.aaaaaaaaaaaa"]] },
  );
});

Deno.test("accounts: a registration that cannot reach W copies is refused, never acknowledged", async () => {
  const ring = new TestRing();
  [10, 60, 110].map((id) => ring.add(id));
  const owner = ring.sorted()[ring.ownerIndex(parseInt(ring.ringKeyOf("zoe"), 16))]!.address;
  for (const { address } of ring.sorted()) if (address !== owner) ring.unreachable.add(address);
  const viaOwner = ring.live.get(owner)!.replicator;
  await assert.rejects(viaOwner.registerAccount(account("zoe")), UnavailableError);
  assert.equal(accountCopies(ring).get("zoe"), undefined, "a refused registration left a copy");
  // The client's retry (a new bcrypt hash of the same secret) goes through once a replica is back.
  ring.unreachable.clear();
  await viaOwner.registerAccount(account("zoe", 2, "b"));
  assert.ok(accountCopies(ring).get("zoe")!.length >= 2);
});

/** The node at `address`. */
function nodeAt(ring: TestRing, address: string) {
  return ring.live.get(address)!;
}

/** Puts `addresses` on a side of their own (a partition the ring noticed). */
function split(ring: TestRing, addresses: string[]) {
  for (const a of addresses) ring.side.set(a, 1);
}

Deno.test("replication: a server cut off alone refuses writes instead of acknowledging one copy", async () => {
  const ring = new TestRing();
  [10, 60, 110, 160, 210].map((id) => ring.add(id));
  await ring.repair(1); // every node has seen the cluster of five
  const lone = ring.sorted()[0]!.address;
  split(ring, [lone]);
  await assert.rejects(nodeAt(ring, lone).replicator.storeMessages([message(1)]), UnavailableError);
  assert.equal(ring.copies().get(message(1).messageId), undefined, "a refused write left a copy");
  // The other side (four servers) still stores with W copies.
  const other = ring.sorted()[1]!.address;
  await nodeAt(ring, other).replicator.storeMessages([message(2)]);
  assert.ok(ring.copies().get(message(2).messageId)! >= 2);
});

Deno.test("accounts: a name is created on at most one side of a 3 | 2 split", async () => {
  const ring = new TestRing();
  [10, 60, 110, 160, 210].map((id) => ring.add(id));
  await ring.repair(1);
  const all = ring.sorted().map((n) => n.address);
  split(ring, all.slice(3));
  await assert.rejects(
    nodeAt(ring, all[3]!).replicator.registerAccount(account("dora", 1, "m")),
    UnavailableError,
    "the side of two registered a name",
  );
  await nodeAt(ring, all[0]!).replicator.registerAccount(account("dora", 2, "n"));
  ring.side.clear();
  await ring.repair(3);
  assert.deepEqual(accountCopies(ring).get("dora"), [2, 2, 2]);
});

Deno.test("accounts: an isolated server refuses to re-register an existing name and cannot say it is free", async () => {
  const ring = new TestRing();
  [10, 60, 110, 160, 210].map((id) => ring.add(id));
  await nodeAt(ring, "node-0a").replicator.registerAccount(account("alice"));
  await ring.repair(2);
  const holders = new Set(
    [...ring.live].filter(([, n]) => n.store.accounts.get("alice")).map(([a]) => a),
  );
  const lone = ring.sorted().find((n) => !holders.has(n.address))!.address;
  split(ring, [lone]);
  const isolated = nodeAt(ring, lone).replicator;
  await assert.rejects(isolated.getAccount("alice"), UnavailableError);
  await assert.rejects(isolated.registerAccount(account("alice", 0, "q")), UnavailableError);
  assert.equal(nodeAt(ring, lone).store.accounts.get("alice"), undefined);
});

Deno.test("accounts: a read that could not hear enough copies is unavailable, not 'no such account'", async () => {
  const ring = new TestRing();
  [10, 60, 110].map((id) => ring.add(id));
  const primary = ring.sorted()[ring.ownerIndex(parseInt(ring.ringKeyOf("nobody"), 16))]!.address;
  for (const { address } of ring.sorted()) if (address !== primary) ring.unreachable.add(address);
  await assert.rejects(nodeAt(ring, primary).replicator.getAccount("nobody"), UnavailableError);
  // One replica answering makes a majority of the three copies: now "no such account" is sure.
  ring.unreachable.delete([...ring.unreachable][0]!);
  assert.equal(await nodeAt(ring, primary).replicator.getAccount("nobody"), undefined);
});

Deno.test("replication: copies of a message stored with different seq agree after repair", async () => {
  const ring = new TestRing();
  [10, 60, 110, 160, 210].map((id) => ring.add(id));
  const ringKey = ring.ringKeyOf("bob");
  const stores = [...ring.live.values()].map((n) => n.store);
  // As after a retry across a ring change: two coordinators gave the message different seqs.
  const seq = Date.now();
  stores.forEach((s, i) =>
    s.mailbox.insert([{ ...message(7), ringKey, seq: seq - 100 * (i % 2) }])
  );
  await ring.repair(3);
  const seqs = stores.flatMap((s) => s.mailbox.pending("bob").map((e) => e.seq));
  assert.ok(seqs.length >= 3);
  assert.deepEqual(new Set(seqs), new Set([seq - 100]));
  // And the primary keeps a message's seq when a client retries it.
  const via = nodeAt(ring, "node-0a").replicator;
  await via.storeMessages([message(8)]);
  const first = (await via.fetchPending("bob")).find((e) => e.messageId === message(8).messageId)!;
  await via.storeMessages([message(8)]);
  const again = (await via.fetchPending("bob")).find((e) => e.messageId === message(8).messageId)!;
  assert.equal(again.seq, first.seq);
});

Deno.test("accounts: a registration that lost to an older one is told to every live server", async () => {
  const ring = new TestRing();
  [10, 60, 110, 160, 210].map((id) => ring.add(id));
  const told = new Map<string, string[]>();
  for (const [address, n] of ring.live) {
    n.replicator.onAccountReplaced(({ winner, loser }) =>
      told.set(address, [...(told.get(address) ?? []), `${winner.createdAt}>${loser.createdAt}`])
    );
  }
  const [a, b] = [...ring.live.values()].map((n) => n.store);
  a!.accounts.put(account("alice", 5, "x"));
  b!.accounts.put(account("alice", 3, "y"));
  await ring.repair(3);
  await waitUntil(() => told.size === ring.live.size);
  for (const [, seen] of told) assert.ok(seen.includes("3>5"), `told: ${seen}`);
});

/** Lets the fire-and-forget notices of a round land (they are in-process promises). */
async function waitUntil(check: () => boolean) {
  for (let i = 0; i < 100 && !check(); i++) await new Promise((r) => setTimeout(r, 0));
  assert.ok(check());
}

Deno.test("replication: a primary back while the copies that took acks do not answer withholds what only it holds", async () => {
  const ring = new TestRing();
  [10, 60, 110, 160, 210].map((id) => ring.add(id));
  const nodes = ring.sorted();
  const p = ring.ownerIndex(parseInt(ring.ringKeyOf("bob"), 16));
  const primary = nodes[p]!;
  const s1 = nodes[(p + 1) % nodes.length]!.address;
  const s2 = nodes[(p + 2) % nodes.length]!.address;
  const s3 = nodes[(p + 3) % nodes.length]!.address;
  const first = ring.live.get(primary.address)!.replicator;
  await first.storeMessages([0, 1, 2].map((i) => message(i)));
  // The primary goes away; while it is gone, 0 and 1 are acknowledged on its next two
  // successors only (W = 2; the third is unreachable just then).
  const oldDisk = ring.live.get(primary.address)!.store;
  ring.crash(primary.id);
  ring.unreachable.add(s3);
  const reader = ring.live.get(s2)!.replicator;
  await reader.acknowledge("bob", [message(0).messageId, message(1).messageId]);
  ring.unreachable.delete(s3);
  // Back with its old disk, while the two successors that took the acks do not answer.
  const back = ring.add(primary.id, oldDisk);
  ring.unreachable.add(s1);
  ring.unreachable.add(s2);
  ring.suspect.add(s1);
  ring.suspect.add(s2);
  const fetched = (await back.fetchPending("bob")).map((e) => e.messageId);
  for (const id of [message(0).messageId, message(1).messageId]) {
    assert.ok(!fetched.includes(id), `${id} was acknowledged and came back: ${fetched}`);
  }
  // Once they answer again, what is still pending comes (nothing was lost).
  ring.unreachable.clear();
  ring.suspect.clear();
  assert.deepEqual((await back.fetchPending("bob")).map((e) => e.messageId), [
    message(2).messageId,
  ]);
});

Deno.test("replication: a brief fetch names the copies the primary holds and sends only the others", async () => {
  const ring = new TestRing();
  const nodes = [10, 60, 110].map((id) => ring.add(id)); // K = 2: every node holds every copy
  await nodes[0]!.storeMessages([message(1), message(2), message(3)]);
  await nodes[0]!.acknowledge("bob", ["message-0003"]);
  const ringKey = ring.ringKeyOf("bob");
  const ask = { v: 1, type: "fetch", recipient: "bob", ringKey, coordinate: false } as const;
  const ids = ["message-0001", "message-0003"];
  const full = await nodes[1]!.handle({ ...ask, ids });
  const brief = await nodes[1]!.handle({ ...ask, ids, brief: true });
  assert.ok(full.type === "entries" && brief.type === "entries");
  assert.deepEqual(full.entries.map((e) => e.messageId), ["message-0001", "message-0002"]);
  assert.deepEqual(full.held, undefined);
  assert.deepEqual(brief.entries.map((e) => e.messageId), ["message-0002"]);
  assert.deepEqual(brief.held, ["message-0001"]);
  assert.deepEqual(brief.deleted, ["message-0003"]);
  assert.deepEqual(full.deleted, ["message-0003"]);
  // The coordinated read merges either kind of answer the same way.
  assert.deepEqual((await nodes[2]!.fetchPending("bob")).map((e) => e.messageId), [
    "message-0001",
    "message-0002",
  ]);
});

Deno.test("accounts: servers back from old disks that lack a name cannot let someone else register it", async () => {
  const ring = new TestRing();
  // Three servers, K = 2: every one holds every account. Two of them come back from disks
  // older than bob's registration (they hold other data, so they are catching up), and the
  // only server with his account (bob's primary is one of the two) is unreachable.
  const oldDisk = () => {
    const store = new NodeStore(":memory:", { ringKeyOf: ring.ringKeyOf });
    store.accounts.put(account("zed"));
    return store;
  };
  ring.add(10);
  const [a, b] = [ring.add(60, oldDisk()), ring.add(110, oldDisk())];
  nodeAt(ring, "node-0a").store.accounts.put(account("bob"));
  ring.unreachable.add("node-0a");
  a.start();
  b.start();
  try {
    assert.ok(a.catchingUp && b.catchingUp);
    // Two stale "no account" answers are not a majority of copies saying the name is free.
    await assert.rejects(a.registerAccount(account("bob", 5, "x")), UnavailableError);
    await assert.rejects(b.getAccount("bob"), UnavailableError);
    assert.equal(nodeAt(ring, "node-3c").store.accounts.get("bob"), undefined);
    assert.equal(nodeAt(ring, "node-6e").store.accounts.get("bob"), undefined);
    // Once the server holding it answers, his account is found and the name stays his.
    ring.unreachable.delete("node-0a");
    await assert.rejects(a.registerAccount(account("bob", 5, "x")), UsernameTakenError);
    assert.equal((await b.getAccount("bob"))?.createdAt, 1);
  } finally {
    await a.stop();
    await b.stop();
  }
});

/** A WAL whose syncs wait until the test lets them end (a slow disk). */
class HeldWal implements SyncableFile {
  waiting: (() => void)[] = [];
  syncData(): Promise<void> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  release(): void {
    for (const r of this.waiting.splice(0)) r();
  }
  close(): void {}
}

Deno.test("replication: a put is acknowledged only once the primary's copy and a replica's are on disk", async () => {
  const ring = new TestRing();
  const ids = [10, 60, 110];
  const primaryId = ids[ring.ownerIndexOfIds(ids, "bob")]!;
  const wals = new Map(ids.map((id) => [id, new HeldWal()]));
  const nodes = ids.map((id) =>
    ring.add(id, new NodeStore(":memory:", { ringKeyOf: ring.ringKeyOf, walFile: wals.get(id) }))
  );
  let acked = false;
  const put = nodes[0]!.storeMessages([message(1)]).then(() => acked = true);
  const holders = () =>
    ids.filter((id) =>
      ring.live.get(`node-${hex(id)}`)!.store.mailbox.entries([["bob", message(1).messageId]])
        .length
    );
  await waitUntil(() => holders().length === 3);
  // Committed everywhere, on disk nowhere: not acknowledged (the rest of the work is in memory,
  // a few turns of the event loop).
  const turns = async () => {
    for (let i = 0; i < 10; i++) await new Promise((r) => setTimeout(r, 0));
  };
  await turns();
  assert.equal(acked, false, "acknowledged before any copy reached the disk");
  for (const id of ids) if (id !== primaryId) wals.get(id)!.release();
  await turns();
  assert.equal(acked, false, "acknowledged before the primary's copy reached the disk");
  wals.get(primaryId)!.release();
  await put;
});

Deno.test("replication: anti-entropy skips listing a replica that took every write, lists one that missed one at once, and none for longer than SYNC_SKIP_MAX_MS", async () => {
  const ring = new TestRing();
  let now = Date.now();
  ring.now = () => now;
  [10, 60, 110].map((id) => ring.add(id));
  const nodes = ring.sorted();
  const p = ring.ownerIndex(parseInt(ring.ringKeyOf("bob"), 16));
  const primary = ring.live.get(nodes[p]!.address)!;
  const replicaAddress = nodes[(p + 1) % 3]!.address;
  const replica = ring.live.get(replicaAddress)!;
  const holds = (i: number) =>
    replica.store.mailbox.entries([["bob", message(i).messageId]]).length === 1;
  const skipped = () => primary.metrics!.get("p2pchat_replication_sync_skipped_total");
  await primary.replicator.storeMessages([0, 1].map((i) => message(i)));
  await ring.repair(1); // digests equal: the replica is known to be in sync
  // A copy lost without a failed call (a disk that dropped rows): the digests differ, but while
  // writes are under way they always do, so its keys are not listed at once ...
  replica.store.deleteRingKey(ring.ringKeyOf("bob"));
  await primary.replicator.repairRound();
  assert.equal(skipped(), 1);
  assert.ok(!holds(0), "listed although in sync");
  // ... nor later than SYNC_SKIP_MAX_MS after it was last known in sync.
  now += SYNC_SKIP_MAX_MS;
  await primary.replicator.repairRound();
  assert.ok(holds(0) && holds(1), "not repaired after SYNC_SKIP_MAX_MS");
  // A write the replica could not take: its keys are listed at the next round.
  ring.unreachable.add(replicaAddress);
  await primary.replicator.storeMessages([message(2)]);
  ring.unreachable.delete(replicaAddress);
  assert.ok(!holds(2));
  await primary.replicator.repairRound();
  assert.ok(holds(2), "a replica that missed a write was not listed at the next round");
  // A write sent around a suspect replica: the same.
  ring.suspect.add(replicaAddress);
  await primary.replicator.storeMessages([message(3)]);
  ring.suspect.delete(replicaAddress);
  assert.ok(!holds(3));
  await primary.replicator.repairRound();
  assert.ok(holds(3), "a replica routed around was not listed at the next round");
  assert.equal(skipped(), 1);
});
