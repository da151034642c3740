/**
 * Places a user's records on the ring — the account, presence, and offline mailbox entries —
 * under the user's ring key: every record lives on the primary for that key and on the primary's
 * next K successors. A coordinated write is acknowledged only after W copies are durable on W
 * distinct servers (SQLite, synchronous=FULL) — never fewer because the ring shrank: W counts
 * against the largest cluster this server has known, so an isolated server refuses. A
 * registration is decided by a majority: the coordinator must see most of the known cluster
 * alive and hear a majority of the replica set, so a name is created on at most one side of a
 * partition. Reads merge the replicas by message id and drop whatever any copy heard has
 * tombstoned; an acknowledgement by the recipient becomes a tombstone on every copy. A background
 * round keeps copies where they belong: it syncs the primary range with the K successors (digest,
 * then only the differences, which also reconciles the order of a message stored twice), hands
 * ranges this node no longer holds to their current replicas, and only then drops them.
 * After its start a server catches up before its disk is trusted (it may be empty or old): see
 * {@link Replicator.catchingUp}. An acknowledgement is answered once every replica asked has
 * answered, so no reachable copy is left holding an acknowledged message as pending.
 */
import type { AccountRecord } from "../../shared/mod.ts";
import type {
  AccountReplacement,
  ItemKey,
  KeyRange,
  MailboxEntry,
  NodeStore,
  PresenceRecord,
  Tombstone,
} from "../store/mod.ts";
import { accountVersion, mergeAccounts } from "../store/mod.ts";
import type { ReplicationRequest, ReplicationResponse } from "./messages.ts";
import type { RingAccess } from "./ring_access.ts";
import { Batcher, type Settled } from "./batcher.ts";
import { PendingBounds, type PendingTally } from "./pending_bounds.ts";
import type { Log } from "../telemetry/mod.ts";

/**
 * Told on the primary of a user's presence record when the user comes online, moves to another
 * server, or goes offline (logout, expiry, or the home server left the cluster).
 */
export type PresenceListener = (record: PresenceRecord, online: boolean) => void;

/**
 * Told on every server when a copy of an account lost to an older registration of the same name
 * (two sides of a partition registered it): whatever still believes `loser` must forget it.
 */
export type AccountReplacedListener = (replacement: AccountReplacement) => void;

/** Sends one replication request to another node; rejects when it cannot be reached. */
export type PeerCall = (
  address: string,
  request: ReplicationRequest,
) => Promise<ReplicationResponse>;

/** Counters replication reports to (the server's Metrics satisfies it). */
export interface ReplicationMetrics {
  inc(name: string, labels?: Record<string, string>, by?: number): void;
  set(name: string, value: number, labels?: Record<string, string>): void;
}

/** Collaborators of a {@link Replicator}. */
export interface ReplicatorDeps {
  store: NodeStore;
  ring: RingAccess;
  call: PeerCall;
  metrics: ReplicationMetrics;
  log: Log;
  /** Milliseconds since the epoch. @default Date.now */
  now?: () => number;
  /** Whether the server at `address` is alive; presence homed on a dead server is offline. */
  isLive?: (address: string) => boolean;
  /**
   * Whether the server at `address` missed its last hello (frozen or cut off, perhaps): it is
   * neither a replica target nor a primary to wait on until it answers again. @default never
   */
  isSuspect?: (address: string) => boolean;
  /**
   * This server and every live peer. Registrations need a strict majority of
   * {@link knownServers} here; an account replacement is told to all of them.
   * @default only the ring's view (this node and its successors)
   */
  liveServers?: () => string[];
  /** Every server this one has known in the cluster, alive or not. @default liveServers */
  knownServers?: () => string[];
}

/** Configuration of a {@link Replicator}. */
export interface ReplicatorOptions {
  /** Copies beyond the primary. @default 2 */
  k?: number;
  /**
   * Durable copies, on distinct servers, before a write is acknowledged. Capped only by the
   * largest cluster this server has known (a one-server deployment keeps one copy), never by the
   * ring's current size. @default 2
   */
  w?: number;
  /** Period of the repair round, in ms. @default 1000 */
  repairIntervalMs?: number;
  /** Most pending entries per recipient. @default 10000 */
  quotaPerRecipient?: number;
  /**
   * Most pending entries one sender may leave in one mailbox, so no single sender can fill it.
   * @default a tenth of the mailbox quota
   */
  quotaPerSender?: number;
  /**
   * Most envelope characters one sender may leave pending in one mailbox (files go there as many
   * chunks); checked on a put holding a file chunk (an entry of at least {@link LARGE_ENTRY}
   * characters), which is refused with `quota_exceeded` past it. @default 64 MiB
   */
  senderBytes?: number;
  /** Entries older than this are deleted, in ms. @default 30 days */
  maxAgeMs?: number;
  /** Least time between two collections of old tombstones, in ms. @default TOMBSTONE_GC_EVERY_MS */
  tombstoneGcEveryMs?: number;
  /**
   * Tombstones are collected once acknowledged this long before the retention, in ms; more than
   * servers' clocks may differ. @default TOMBSTONE_MARGIN_MS
   */
  tombstoneMarginMs?: number;
  /**
   * How long a client request keeps retrying while the ring repairs, in ms; every attempt is cut
   * at this deadline, so {@link UnavailableError} comes within it. @default 8000
   */
  writeDeadlineMs?: number;
  /**
   * Longest wait for one attempt of a client request on a primary, in ms; past it the request is
   * tried again (on the primary the ring then names), so a frozen primary cannot use up the
   * whole write deadline. @default 3000
   */
  attemptTimeoutMs?: number;
  /**
   * How long a server restarted with mailbox data waits, at most, for the servers that should
   * hold copies of its pending entries to answer before it trusts them (see
   * {@link Replicator.catchingUp}), in ms. @default 30000
   */
  catchUpMaxWaitMs?: number;
}

/** A message to store for an offline recipient, as the home server receives it. */
export type NewMessage = Omit<MailboxEntry, "seq" | "ringKey">;

/**
 * A tombstone is collected once acknowledged this long before the oldest entry kept (the
 * retention, {@link ReplicatorOptions.maxAgeMs}): far more than servers' clocks may differ
 * (MAX_CLOCK_SKEW_MS), so the entry it stands for is past the retention on every server.
 */
export const TOMBSTONE_MARGIN_MS = 24 * 3_600_000;

/** Least time between two collections of old tombstones (a scan of the table), in ms. */
export const TOMBSTONE_GC_EVERY_MS = 10 * 60_000;

/** A message sent longer ago than the retention: stored, it would expire unread. */
export class TooOldError extends Error {
  override name = "TooOldError";
}

/** No replica set could durably store or serve the request in time. */
export class UnavailableError extends Error {
  override name = "UnavailableError";
}

/** The username of a new account is already registered. */
export class UsernameTakenError extends Error {
  override name = "UsernameTakenError";
}

/** The recipient's mailbox is at its quota. */
export class MailboxFullError extends Error {
  override name = "MailboxFullError";
}

/** The sender's share of the recipient's mailbox (files) is at its byte quota. */
export class QuotaExceededError extends Error {
  override name = "QuotaExceededError";
}

/** Entries at least this long (file chunks) count against {@link ReplicatorOptions.senderBytes}. */
export const LARGE_ENTRY = 8 * 1024;

/** Default of {@link ReplicatorOptions.senderBytes}. */
export const DEFAULT_SENDER_BYTES = 64 * 1024 * 1024;

/** How often a call in flight checks whether its peer turned suspect, in ms. */
const SUSPECT_POLL_MS = 100;
/**
 * Longest a primary goes without listing a replica's keys while their digests differ, as long as
 * that replica took every write sent to it since the two last matched (see {@link Replicator}'s
 * anti-entropy): under a steady stream of writes the digests always differ (writes in flight),
 * and listing every key of the range every round cost a busy server stalls of 20–40 ms.
 */
export const SYNC_SKIP_MAX_MS = 10_000;

/** How long a looked-up primary is used before the ring is asked again, in ms. */
const PRIMARY_CACHE_MS = 1000;

/** Most tombstones asked for in one `get_items` request while catching up. */
const CATCH_UP_BATCH = 5000;

/** Most presence records in one request of a refresh (see `publishPresence`). */
const PRESENCE_BATCH = 500;

/** Pause between two attempts to catch up, in ms. */
const CATCH_UP_RETRY_MS = 300;

/** Most mailbox entries one group commit stores (and sends to each replica in one request). */
const MAX_PUT_BATCH = 4000;
/** Most tombstones in one batch of acks (a replica request carries at most MAX_BATCH). */
const MAX_ACK_BATCH = 5000;

/** Pending counts on a primary, as {@link Replicator.#flushPuts} reads them for the quotas. */
interface QuotaCounts {
  /** At least the entries pending for `recipient`; exactly that with `exact`. */
  to(recipient: string, exact?: boolean): number;
  /**
   * At least the entries (and their envelope characters) `sender` left pending for `recipient`;
   * exactly those with `exact`.
   */
  from(recipient: string, sender: string, exact?: boolean): PendingTally;
}

function mib(chars: number): string {
  return `${(chars / (1024 * 1024)).toFixed(1)} MB`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The mailbox replication of one server node. */
export class Replicator {
  #deps: ReplicatorDeps;
  #k: number;
  #w: number;
  #intervalMs: number;
  #quota: number;
  #quotaPerSender: number;
  #senderBytes: number;
  #maxAgeMs: number;
  #tombstoneGcEveryMs: number;
  #tombstoneMarginMs: number;
  #deadlineMs: number;
  #attemptMs: number;
  #catchUpMaxWaitMs: number;
  #now: () => number;
  #startedAt: number;
  /** See {@link catchingUp}; set by {@link start}. */
  #catchingUp = false;
  /** This server started with pending mailbox entries on its disk (see {@link catchingUp}). */
  #heldMail: boolean;
  /** This server started with records on its disk: mail or accounts (see {@link catchingUp}). */
  #heldData: boolean;
  #catchUpLoop: Promise<void> | undefined;
  /**
   * Every address this server's database has been served at, this one among them (set by
   * {@link start}): an earlier address is this server itself, restarted on another port.
   */
  #ownAddresses = new Set<string>();
  #lastSeq = 0;
  #lastPresenceSweep = 0;
  /** When old tombstones were last collected. */
  #lastTombstoneGc = -Infinity;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running = false;
  #round: Promise<void> | undefined;
  #presenceListeners = new Set<PresenceListener>();
  #accountListeners = new Set<AccountReplacedListener>();
  /** Largest number of servers this node has known in the cluster (see {@link ReplicatorOptions.w}). */
  #largestCluster = 1;
  /** Registrations in flight on this coordinator, by username: one decision per name at a time. */
  #registering = new Map<string, Promise<unknown>>();
  /** Coordinated puts for another primary, by its address, waiting for the next request there. */
  #forwards = new Map<string, Batcher<MailboxEntry[], ReplicationResponse>>();
  /**
   * Peers known to hold everything of a range of this primary as of a moment (their digest
   * matched, or a key listing brought them up to date), by peer and range, with that moment:
   * forgotten as soon as a call to the peer fails or is refused (see {@link #syncRange}).
   */
  #inSync = new Map<string, { range: string; at: number; failures: number }>();
  /** Calls to each peer that failed or were refused, since this node started. */
  #failedCalls = new Map<string, number>();
  /** Primaries of ring keys recently looked up (see {@link #primaryOf}). */
  #primaries = new Map<string, { primary: Promise<string>; until: number }>();
  /** Pending counts for the quotas, read from the store once and kept as bounds. */
  #pendingBounds: PendingBounds;
  /**
   * Mailbox puts waiting for this primary's next group commit. Two commits may run at once: the
   * next batch is stored while the one before waits for its replicas.
   */
  #puts = new Batcher<MailboxEntry[], ReplicationResponse>(
    (batch) => this.#flushPuts(batch),
    { maxWeight: MAX_PUT_BATCH, weight: (entries) => entries.length, concurrency: 2 },
  );

  /**
   * Acks waiting for this primary's next tombstone commit (group commit, as for puts): acks that
   * come together share one transaction and one request per replica.
   */
  #acks = new Batcher<Tombstone[], ReplicationResponse>(
    (batch) => this.#flushAcks(batch),
    { maxWeight: MAX_ACK_BATCH, weight: (tombstones) => tombstones.length, concurrency: 2 },
  );

  /** Creates the replicator; {@link start} begins the repair rounds. */
  constructor(deps: ReplicatorDeps, options: ReplicatorOptions = {}) {
    this.#deps = deps;
    this.#k = options.k ?? 2;
    this.#w = options.w ?? 2;
    this.#intervalMs = options.repairIntervalMs ?? 1000;
    this.#quota = options.quotaPerRecipient ?? 10_000;
    this.#quotaPerSender = options.quotaPerSender ?? Math.max(1, Math.floor(this.#quota / 10));
    this.#senderBytes = options.senderBytes ?? DEFAULT_SENDER_BYTES;
    this.#maxAgeMs = options.maxAgeMs ?? 30 * 24 * 3_600_000;
    this.#tombstoneGcEveryMs = options.tombstoneGcEveryMs ?? TOMBSTONE_GC_EVERY_MS;
    this.#tombstoneMarginMs = options.tombstoneMarginMs ?? TOMBSTONE_MARGIN_MS;
    this.#deadlineMs = options.writeDeadlineMs ?? 8000;
    this.#attemptMs = options.attemptTimeoutMs ?? 3000;
    this.#catchUpMaxWaitMs = options.catchUpMaxWaitMs ?? 30_000;
    this.#now = deps.now ?? Date.now;
    // No path stores an entry past the retention, nor a tombstone past it and the margin: a
    // collected tombstone's entry cannot come back (a late replica copy, a repair from a server
    // restarted from an old disk or backup).
    deps.store.mailbox.retain({
      oldestSeq: () => this.#now() - this.#maxAgeMs,
      oldestTombstone: () => this.#tombstoneHorizon(),
    });
    this.#pendingBounds = new PendingBounds(deps.store.mailbox);
    this.#startedAt = this.#now();
    const held = deps.store.mailbox.counts();
    this.#heldMail = held.primary + held.replica > 0;
    const accounts = deps.store.accountCounts();
    this.#heldData = this.#heldMail || accounts.primary + accounts.replica > 0;
  }

  /**
   * Whether this server, since {@link start}, has not yet caught up with the others: it started
   * from records on its disk, which may be old (a restart, a copy of old data). Until it has
   * asked every live server — and every server of the cluster it knows, or `catchUpMaxWaitMs`
   * passed — for the accounts it should hold and for the tombstones of its pending entries (an
   * address its database was served at before, when it restarts on another port, is itself and
   * is not waited for):
   * - that it lacks an account proves nothing: its "no such account" does not count (a server
   *   that started from an empty disk is taken for a new one, as before);
   * - if it started with pending entries, those may have been acknowledged while it was down
   *   (their tombstones went to the servers that served the recipient then): they confirm
   *   nothing in a fetch (as the primary's own or as a replica's answer), and it takes no part
   *   in anti-entropy, which would copy them to other servers as if they were pending.
   */
  get catchingUp(): boolean {
    return this.#catchingUp;
  }

  /** Whether this server's lack of an account proves nothing yet (see {@link catchingUp}). */
  #staleAccounts(): boolean {
    return this.#catchingUp && this.#heldData;
  }

  /** Whether this server's pending entries may be stale (see {@link catchingUp}). */
  #staleMail(): boolean {
    return this.#catchingUp && this.#heldMail;
  }

  /**
   * Calls `listener` on every change of status of a presence record this node is primary for;
   * returns the function that unsubscribes it.
   */
  onPresenceChange(listener: PresenceListener): () => void {
    this.#presenceListeners.add(listener);
    return () => this.#presenceListeners.delete(listener);
  }

  /**
   * Calls `listener` whenever a registration some server believed lost to an older one of the
   * same name (told on every live server); returns the function that unsubscribes it.
   */
  onAccountReplaced(listener: AccountReplacedListener): () => void {
    this.#accountListeners.add(listener);
    return () => this.#accountListeners.delete(listener);
  }

  #tellAccountReplaced(replacement: AccountReplacement): void {
    for (const listener of this.#accountListeners) {
      try {
        listener(replacement);
      } catch (err) {
        this.#deps.log("account_listener_failed", { error: String(err) });
      }
    }
  }

  /** A copy here lost to an older registration: tell this server, then every live one. */
  #accountReplaced(replacement: AccountReplacement): void {
    const { winner, loser } = replacement;
    this.#deps.metrics.inc("p2pchat_accounts_replaced_total");
    this.#deps.log("account_replaced", {
      username: winner.username,
      winner: accountVersion(winner),
      loser: accountVersion(loser),
    });
    this.#tellAccountReplaced(replacement);
    const request: ReplicationRequest = { v: 1, type: "account_replaced", winner, loser };
    for (const server of this.#liveServers()) {
      if (server === this.#deps.ring.self) continue;
      this.#deps.call(server, request).catch((err) =>
        this.#deps.log("account_replaced_notice_failed", { server, error: String(err) })
      );
    }
  }

  #liveServers(): string[] {
    const { ring } = this.#deps;
    return this.#deps.liveServers?.() ?? [ring.self, ...ring.successors()];
  }

  /**
   * The size of the cluster copies are counted against: the largest this node has known (its
   * membership, else its ring), so a shrunken or isolated ring never lowers W.
   */
  #clusterSize(): number {
    const { ring } = this.#deps;
    const known = this.#deps.knownServers?.() ?? this.#deps.liveServers?.() ?? [];
    const inRing = new Set([ring.self, ...ring.successors()]).size;
    this.#largestCluster = Math.max(this.#largestCluster, new Set(known).size, inRing);
    return this.#largestCluster;
  }

  /** Durable copies a write needs: W, or fewer only in a cluster that never had W servers. */
  #copiesNeeded(): number {
    return Math.min(this.#w, this.#clusterSize());
  }

  /** The replica set's size as the known cluster allows: K + 1, or every server of a small one. */
  #replicaSetSize(): number {
    return Math.min(this.#k + 1, this.#clusterSize());
  }

  /** Whether this server sees a strict majority of the servers it knows in the cluster alive. */
  #seesMajority(): boolean {
    const live = new Set(this.#liveServers()).size;
    return 2 * live > this.#clusterSize();
  }

  /**
   * The distinct servers this primary replicates to: its first K successors other than itself
   * and other than suspect ones (their copies are repaired once they answer again).
   */
  #replicaTargets(): string[] {
    const self = this.#deps.ring.self;
    const suspect = this.#deps.isSuspect ?? (() => false);
    const targets: string[] = [];
    for (const a of new Set(this.#deps.ring.successors())) {
      if (a === self) continue;
      // A suspect successor misses what is sent now: its keys are listed at the next sync.
      if (suspect(a)) this.#callFailed(a);
      else if (targets.push(a) === this.#k) break;
    }
    return targets;
  }

  #presenceChanged(record: PresenceRecord, online: boolean): void {
    for (const listener of this.#presenceListeners) {
      try {
        listener(record, online);
      } catch (err) {
        this.#deps.log("presence_listener_failed", { error: String(err) });
      }
    }
  }

  // --- the client-facing operations (called by the home server) -----------------------------

  /**
   * Stores messages for offline recipients; resolves once every one is durable on W copies.
   * Retries while the ring repairs; throws {@link UnavailableError}, {@link MailboxFullError},
   * {@link QuotaExceededError}, or {@link TooOldError} (sent longer ago than the retention).
   */
  async storeMessages(messages: readonly NewMessage[]): Promise<void> {
    // A client's retry of a message so old that its tombstone may be collected would store it
    // again with a new seq: the same age limit as the entries', taken from the sender's clock.
    const oldest = this.#now() - this.#maxAgeMs;
    const old = messages.find((m) => m.sentAt < oldest);
    if (old) {
      this.#deps.metrics.inc("p2pchat_mailbox_rejected_total", { reason: "too_old" });
      throw new TooOldError(
        `Message ${old.messageId} was sent more than ${
          this.#maxAgeMs % 86_400_000
            ? `${this.#maxAgeMs / 1000} s` // a test's retention (P2P_TEST_TIMINGS)
            : `${this.#maxAgeMs / 86_400_000} days`
        } ago by its sender's clock: it would expire unread, so it was not stored (a new message? check the date and time of the sending device)`,
      );
    }
    const byKey = new Map<string, MailboxEntry[]>();
    for (const m of messages) {
      const ringKey = this.#deps.ring.ringKeyOf(m.recipient);
      const group = byKey.get(ringKey) ?? [];
      group.push({ ...m, ringKey, seq: 0 });
      byKey.set(ringKey, group);
    }
    await Promise.all(
      [...byKey].map(([ringKey, entries]) =>
        this.#coordinated(ringKey, { v: 1, type: "put", entries, coordinate: true })
      ),
    );
  }

  /** Every pending entry of `recipient`, merged across replicas, in delivery order. */
  async fetchPending(recipient: string): Promise<MailboxEntry[]> {
    const ringKey = this.#deps.ring.ringKeyOf(recipient);
    const res = await this.#coordinated(ringKey, {
      v: 1,
      type: "fetch",
      recipient,
      ringKey,
      coordinate: true,
    });
    return res.type === "entries" ? res.entries : [];
  }

  /**
   * Deletes acknowledged entries on every copy (tombstones); returns who sent each entry the
   * primary held, as stored, for the `delivered` receipts.
   */
  async acknowledge(
    recipient: string,
    messageIds: readonly string[],
  ): Promise<{ messageId: string; sender: string }[]> {
    const ringKey = this.#deps.ring.ringKeyOf(recipient);
    const deletedAt = this.#now();
    const tombstones = messageIds.map((messageId) => ({
      recipient,
      messageId,
      ringKey,
      deletedAt,
    }));
    const res = await this.#coordinated(ringKey, {
      v: 1,
      type: "ack",
      tombstones,
      coordinate: true,
    });
    return res.type === "ok" ? res.receipts ?? [] : [];
  }

  /**
   * Registers a new account on its replica set; resolves once W copies are durable. Throws
   * {@link UsernameTakenError} when another registration of the name exists (a retry of the same
   * registration succeeds), or {@link UnavailableError}.
   */
  async registerAccount(account: AccountRecord): Promise<void> {
    const ringKey = this.#deps.ring.ringKeyOf(account.username);
    await this.#coordinated(ringKey, { v: 1, type: "account_put", account, coordinate: true });
  }

  /**
   * Writes new state of an existing account (its rekey, its newest session) on its replica set,
   * decided on the primary like a registration; every copy merges it with what it holds.
   * Resolves once W copies are durable. Throws {@link UsernameTakenError} when the record's
   * registration lost its name, or {@link UnavailableError}.
   */
  async updateAccount(account: AccountRecord): Promise<void> {
    const ringKey = this.#deps.ring.ringKeyOf(account.username);
    await this.#coordinated(ringKey, {
      v: 1,
      type: "account_put",
      account,
      coordinate: true,
      update: true,
    });
  }

  /** The account of `username` as its replica set holds it, or undefined if there is none. */
  async getAccount(username: string): Promise<AccountRecord | undefined> {
    const ringKey = this.#deps.ring.ringKeyOf(username);
    const res = await this.#coordinated(ringKey, {
      v: 1,
      type: "account_get",
      username,
      coordinate: true,
    });
    return res.type === "account" ? res.account : undefined;
  }

  /**
   * Writes the presence of local sessions: `online` users get a record valid for `ttlMs`, the
   * others an expired one (offline). An offline write never hides a newer session elsewhere.
   */
  async publishPresence(
    users: readonly { username: string; online: boolean }[],
    ttlMs: number,
  ): Promise<void> {
    const now = this.#now();
    const records = users.map(({ username, online }): PresenceRecord => ({
      username,
      ringKey: this.#deps.ring.ringKeyOf(username),
      home: this.#deps.ring.self,
      updatedAt: now,
      expiresAt: online ? now + ttlMs : now,
    }));
    const one = (record: PresenceRecord) =>
      this.#coordinated(record.ringKey, {
        v: 1,
        type: "presence_put",
        records: [record],
        coordinate: true,
      });
    if (records.length === 1) {
      await one(records[0]!);
      return;
    }
    // A refresh writes thousands of records: one request per primary (remembered primaries)
    // instead of one per user. A batch that is refused or fails as a whole (a primary that moved
    // refuses records it is not responsible for) goes again one record at a time, through the
    // lookups, retries and redirects of a single write.
    const byPrimary = new Map<string, PresenceRecord[]>();
    const primaries = await Promise.allSettled(records.map((r) => this.#primaryOf(r.ringKey)));
    const alone: PresenceRecord[] = [];
    primaries.forEach((p, i) => {
      if (p.status !== "fulfilled") return alone.push(records[i]!);
      const group = byPrimary.get(p.value) ?? [];
      group.push(records[i]!);
      byPrimary.set(p.value, group);
    });
    const batch = async (primary: string, group: PresenceRecord[]) => {
      const request: ReplicationRequest = {
        v: 1,
        type: "presence_put",
        records: group,
        coordinate: true,
      };
      try {
        const res = await this.#beforeDeadline(
          primary === this.#deps.ring.self
            ? this.handle(request)
            : this.#callPeer(primary, request),
          this.#now() + this.#attemptMs,
        );
        if (res.type === "ok") return;
      } catch {
        // Written one by one below.
      }
      for (const r of group) this.#primaries.delete(r.ringKey);
      await Promise.all(group.map(one));
    };
    await Promise.all([
      ...[...byPrimary].flatMap(([primary, group]) => {
        const parts: Promise<void>[] = [];
        for (let i = 0; i < group.length; i += PRESENCE_BATCH) {
          parts.push(batch(primary, group.slice(i, i + PRESENCE_BATCH)));
        }
        return parts;
      }),
      ...alone.map(one),
    ]);
  }

  /** The presence record of `username` (possibly expired), or undefined. */
  async getPresence(username: string): Promise<PresenceRecord | undefined> {
    const ringKey = this.#deps.ring.ringKeyOf(username);
    const res = await this.#coordinated(ringKey, {
      v: 1,
      type: "presence_get",
      username,
      coordinate: true,
    });
    return res.type === "presence" ? res.record : undefined;
  }

  /**
   * The directory across `servers`: every username held by any of them and every online
   * presence record (the newest per user). Servers that do not answer are skipped.
   */
  async directory(
    servers: readonly string[],
  ): Promise<{ usernames: string[]; online: PresenceRecord[] }> {
    const answers = await Promise.allSettled(
      servers.map((s) =>
        s === this.#deps.ring.self
          ? this.handle({ v: 1, type: "directory" })
          : this.#deps.call(s, { v: 1, type: "directory" })
      ),
    );
    const usernames = new Set<string>();
    const online = new Map<string, PresenceRecord>();
    const now = this.#now();
    for (const a of answers) {
      if (a.status !== "fulfilled" || a.value.type !== "directory") continue;
      for (const u of a.value.usernames) usernames.add(u);
      for (const r of a.value.online) {
        const seen = online.get(r.username);
        if (r.expiresAt > now && (!seen || r.updatedAt > seen.updatedAt)) online.set(r.username, r);
      }
    }
    return { usernames: [...usernames].sort(), online: [...online.values()] };
  }

  /**
   * Sends a coordinated request to the key's primary, following redirects and retrying until
   * the deadline; every step is cut at the deadline, so the caller hears within it.
   */
  async #coordinated(ringKey: string, request: ReplicationRequest): Promise<ReplicationResponse> {
    const deadline = this.#now() + this.#deadlineMs;
    let lastError = "no attempt";
    let redirect: string | undefined;
    for (let attempt = 0; this.#now() < deadline; attempt++) {
      if (attempt > 0 && !redirect) {
        await sleep(Math.min(100 * 2 ** (attempt - 1), 800, Math.max(0, deadline - this.#now())));
        if (this.#now() >= deadline) break;
      }
      let target: string;
      try {
        // A node that was not responsible named the current primary: go there directly, once.
        target = redirect ?? (await this.#beforeDeadline(this.#primaryOf(ringKey), deadline));
        redirect = undefined;
      } catch (err) {
        this.#primaries.delete(ringKey);
        lastError = `lookup failed: ${(err as Error).message}`;
        continue;
      }
      if (target !== this.#deps.ring.self && this.#deps.isSuspect?.(target)) {
        this.#primaries.delete(ringKey);
        lastError = `${target}: suspect (missed its last hello)`;
        continue;
      }
      let res: ReplicationResponse;
      try {
        res = await this.#beforeDeadline(
          target === this.#deps.ring.self
            ? this.handle(request)
            : request.type === "put"
            ? this.#forwardPut(target, request.entries)
            : this.#callPeer(target, request),
          Math.min(deadline, this.#now() + this.#attemptMs),
        );
      } catch (err) {
        this.#primaries.delete(ringKey);
        lastError = `${target}: ${(err as Error).message}`;
        continue;
      }
      if (res.type !== "error") return res;
      this.#primaries.delete(ringKey);
      if (res.code === "mailbox_full") throw new MailboxFullError(res.message);
      if (res.code === "quota_exceeded") throw new QuotaExceededError(res.message);
      if (res.code === "username_taken") throw new UsernameTakenError(res.message);
      const named = res.replicaSet?.[0];
      if (res.code === "not_responsible" && named && named !== target) redirect = named;
      lastError = `${target}: ${res.message}`;
    }
    this.#deps.metrics.inc("p2pchat_replication_unavailable_total");
    throw new UnavailableError(`No replica set could serve the request: ${lastError}`);
  }

  /**
   * `call` to a peer, given up on (rejected; the call itself runs on) as soon as the peer turns
   * suspect, so nothing waits out the RPC timeout on a frozen server.
   */
  async #callPeer(address: string, request: ReplicationRequest): Promise<ReplicationResponse> {
    const failed = () => this.#callFailed(address);
    try {
      const res = await this.#callPeerOnce(address, request);
      if (res.type === "error") failed();
      return res;
    } catch (err) {
      failed();
      throw err;
    }
  }

  /** Notes that `address` may have missed a write (see {@link #syncRange}). */
  #callFailed(address: string): void {
    this.#failedCalls.set(address, (this.#failedCalls.get(address) ?? 0) + 1);
  }

  async #callPeerOnce(address: string, request: ReplicationRequest): Promise<ReplicationResponse> {
    const isSuspect = this.#deps.isSuspect;
    if (!isSuspect) return await this.#deps.call(address, request);
    let timer: ReturnType<typeof setInterval> | undefined;
    const suspected = new Promise<never>((_, reject) => {
      timer = setInterval(() => {
        if (isSuspect(address)) reject(new Error(`${address} is suspect (missed its last hello)`));
      }, SUSPECT_POLL_MS);
    });
    try {
      return await Promise.race([this.#deps.call(address, request), suspected]);
    } finally {
      clearInterval(timer);
    }
  }

  /**
   * Sends a coordinated put to the primary at `target`. Puts for the same primary that come while
   * a request to it is under way go together in the next one (`put_many`), each with its own
   * answer; a request that fails fails exactly the puts in it, and each is retried by its caller.
   */
  #forwardPut(target: string, entries: MailboxEntry[]): Promise<ReplicationResponse> {
    let batcher = this.#forwards.get(target);
    if (!batcher) {
      batcher = new Batcher((batch) => this.#sendPuts(target, batch), {
        maxWeight: MAX_PUT_BATCH,
        weight: (entries) => entries.length,
        concurrency: 2,
      });
      this.#forwards.set(target, batcher);
    }
    const answer = batcher.submit(entries);
    // Forget the batcher of a primary once idle, so departed servers leave nothing behind.
    const forget = () => {
      if (batcher.idle && this.#forwards.get(target) === batcher) {
        this.#forwards.delete(target);
      }
    };
    answer.then(forget, forget);
    return answer;
  }

  async #sendPuts(
    target: string,
    batch: readonly MailboxEntry[][],
  ): Promise<Settled<ReplicationResponse>[]> {
    // A lone put travels as it always has.
    if (batch.length === 1) {
      const value = await this.#callPeer(target, {
        v: 1,
        type: "put",
        entries: batch[0]!,
        coordinate: true,
      });
      return [{ ok: true, value }];
    }
    let res: ReplicationResponse;
    try {
      res = await this.#callPeer(target, { v: 1, type: "put_many", puts: [...batch] });
    } catch (err) {
      // A server of an older version refuses put_many as a bad request: one put each, then.
      if (!/HTTP 400/.test(String(err))) throw err;
      return await Promise.all(
        batch.map((entries) =>
          this.#callPeer(target, { v: 1, type: "put", entries, coordinate: true }).then(
            (value): Settled<ReplicationResponse> => ({ ok: true, value }),
            (error): Settled<ReplicationResponse> => ({ ok: false, error }),
          )
        ),
      );
    }
    if (res.type !== "results" || res.results.length !== batch.length) {
      throw new Error(`${target} answered put_many with ${res.type}`);
    }
    return res.results.map((value) => ({ ok: true, value }));
  }

  /**
   * The primary of `ringKey`, looked up on the ring (a lookup costs ring RPCs) or remembered
   * from a lookup less than {@link PRIMARY_CACHE_MS} ago; concurrent requests share one lookup.
   * A remembered primary is only a first guess: a node that no longer is the primary refuses
   * (naming the current one), and any refusal or failure forgets it.
   */
  #primaryOf(ringKey: string): Promise<string> {
    const now = this.#now();
    const known = this.#primaries.get(ringKey);
    if (known && known.until > now) return known.primary;
    if (this.#primaries.size >= 10_000) this.#primaries.clear();
    const primary = this.#deps.ring.replicaSet(ringKey, this.#k).then((set) => {
      if (!set[0]) throw new Error("empty replica set");
      return set[0];
    });
    const entry = { primary, until: now + PRIMARY_CACHE_MS };
    this.#primaries.set(ringKey, entry);
    primary.catch(() => {
      if (this.#primaries.get(ringKey) === entry) this.#primaries.delete(ringKey);
    });
    return primary;
  }

  /** `work`, or a rejection once `deadline` passes (the work itself runs on). */
  async #beforeDeadline<T>(work: Promise<T>, deadline: number): Promise<T> {
    const started = this.#now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer within ${Math.max(0, deadline - started)} ms`)),
        Math.max(0, deadline - started),
      );
    });
    try {
      return await Promise.race([work, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  // --- the RPC side (requests from other nodes, or from this node as coordinator) -----------

  /** Serves one replication request. */
  async handle(request: ReplicationRequest): Promise<ReplicationResponse> {
    const { store } = this.#deps;
    switch (request.type) {
      case "put": {
        if (request.coordinate) return await this.#coordinatePut(request.entries);
        // Committed at once, answered once on disk: the wait for the disk runs off the event loop.
        const count = store.mailbox.insert(request.entries, { syncLater: true });
        await store.mailbox.synced();
        return { v: 1, type: "ok", count };
      }
      case "put_many":
        return {
          v: 1,
          type: "results",
          results: await Promise.all(request.puts.map((entries) => this.#coordinatePut(entries))),
        };
      case "ack":
        if (request.coordinate) return await this.#coordinateAck(request.tombstones);
        store.mailbox.tombstone(request.tombstones, { syncLater: true });
        await store.mailbox.synced();
        return { v: 1, type: "ok", count: request.tombstones.length };
      case "fetch": {
        if (request.coordinate) {
          return await this.#coordinateFetch(request.recipient, request.ringKey);
        }
        const stale = this.#staleMail() ? { stale: true } : {};
        if (!request.ids) {
          return {
            v: 1,
            type: "entries",
            entries: store.mailbox.pending(request.recipient),
            ...stale,
          };
        }
        const deleted = store.mailbox.deletedOf(request.recipient, request.ids);
        if (!request.brief) {
          const entries = store.mailbox.pending(request.recipient);
          return { v: 1, type: "entries", entries, deleted, ...stale };
        }
        // The primary has the entries it named: they are confirmed by id, not sent again (nor
        // read: the ids come from an index, and only the entries the primary lacks are read).
        const asked = new Set(request.ids);
        const held: string[] = [];
        const others: [string, string][] = [];
        for (const id of store.mailbox.pendingIds(request.recipient)) {
          if (asked.has(id)) held.push(id);
          else others.push([request.recipient, id]);
        }
        const entries = store.mailbox.entries(others);
        return { v: 1, type: "entries", entries, held, deleted, ...stale };
      }
      case "digest":
        // No anti-entropy with a copy still catching up: its pending entries may be stale.
        if (this.#staleMail()) {
          return this.#tooFewCopies(`${this.#deps.ring.self} is catching up after a restart`);
        }
        return { v: 1, type: "digest", ...store.digest(request.range) };
      case "keys":
        return { v: 1, type: "keys", items: store.itemKeys(request.range) };
      case "get_items":
        return {
          v: 1,
          type: "items",
          entries: store.mailbox.entries(request.entries),
          tombstones: store.mailbox.tombstones(request.tombstones),
          accounts: store.accounts.many(request.accounts ?? []),
        };
      case "push":
        return { v: 1, type: "ok", count: this.#putItems(request) };
      case "account_put": {
        if (request.coordinate) {
          return await this.#coordinateAccountPut(request.account, request.update === true);
        }
        const before = store.accounts.get(request.account.username);
        const result = store.accounts.put(request.account);
        if (result === "replaced" && before) {
          this.#accountReplaced({ winner: request.account, loser: before });
        }
        // An older registration is here: this copy does not count towards the new one.
        if (result === "kept") return this.#usernameTaken(request.account.username);
        return { v: 1, type: "ok", count: 1 };
      }
      case "account_get": {
        if (request.coordinate) return await this.#coordinateAccountGet(request.username);
        const account = store.accounts.get(request.username);
        return {
          v: 1,
          type: "account",
          ...(account ? { account } : {}),
          ...(this.#staleAccounts() ? { stale: true } : {}),
        };
      }
      case "presence_put":
        if (request.coordinate) return await this.#coordinatePresencePut(request.records);
        return { v: 1, type: "ok", count: store.presence.put(request.records) };
      case "presence_get": {
        if (request.coordinate) return await this.#coordinatePresenceGet(request.username);
        const record = store.presence.get(request.username);
        return record ? { v: 1, type: "presence", record } : { v: 1, type: "presence" };
      }
      case "directory":
        return {
          v: 1,
          type: "directory",
          usernames: store.accounts.usernames(),
          online: store.presence.online(this.#now()),
        };
      case "account_replaced":
        this.#tellAccountReplaced({ winner: request.winner, loser: request.loser });
        return { v: 1, type: "ok", count: 1 };
    }
  }

  /** Stores items from another node; an account copy that lost is told everywhere. */
  #putItems(items: Parameters<NodeStore["putItems"]>[0]): number {
    const { offered, replaced } = this.#deps.store.putItems(items);
    for (const r of replaced) this.#accountReplaced(r);
    return offered;
  }

  #usernameTaken(username: string): ReplicationResponse {
    return {
      v: 1,
      type: "error",
      code: "username_taken",
      message: `Username "${username}" is taken`,
    };
  }

  /** A refusal because too few copies could be heard or written; the caller retries. */
  #tooFewCopies(message: string): ReplicationResponse {
    this.#deps.metrics.inc("p2pchat_replication_quorum_failed_total");
    return { v: 1, type: "error", code: "quorum_failed", message };
  }

  /**
   * Registration on the primary, one decision per name at a time. It needs a strict majority of
   * the known cluster alive (so at most one side of a partition decides), a majority of the
   * replica set heard with no other registration of the name, and then W durable copies;
   * otherwise it is refused (`quorum_failed`, retried until the caller's deadline). An `update`
   * (new state of an existing account) needs a copy of the account heard and W durable copies.
   */
  #coordinateAccountPut(account: AccountRecord, update = false): Promise<ReplicationResponse> {
    const name = account.username;
    const previous = this.#registering.get(name) ?? Promise.resolve();
    const decided = previous.catch(() => {}).then(() => this.#decideRegistration(account, update));
    this.#registering.set(name, decided);
    void decided.finally(() => {
      if (this.#registering.get(name) === decided) this.#registering.delete(name);
    }).catch(() => {});
    return decided;
  }

  async #decideRegistration(account: AccountRecord, update: boolean): Promise<ReplicationResponse> {
    const { ring, store } = this.#deps;
    const ringKey = ring.ringKeyOf(account.username);
    if (!ring.isPrimaryFor(ringKey)) return await this.#notResponsible(ringKey);
    // A new name needs a majority (one side of a partition creates it); new state of an existing
    // account does not: copies of the same registration merge whichever side wrote them.
    if (!update && !this.#seesMajority()) {
      return this.#tooFewCopies(
        `Cannot register "${account.username}": this server sees ${
          new Set(this.#liveServers()).size
        } of the ${this.#clusterSize()} servers it knows, not a majority`,
      );
    }
    const heard = await this.#readAccountCopies(account.username);
    if (!update && heard.copies < this.#majorityOfReplicaSet()) {
      return this.#tooFewCopies(
        `Cannot register "${account.username}": heard ${heard.copies} of the ${this.#replicaSetSize()} copies, not a majority`,
      );
    }
    if (!update && !heard.account && heard.holders > 0 && 2 * heard.heardHolders <= heard.holders) {
      return this.#tooFewCopies(
        `Cannot register "${account.username}": ${heard.heardHolders} of the ${heard.holders} servers that hold its copies answered`,
      );
    }
    const existing = heard.account;
    if (existing && accountVersion(existing) !== accountVersion(account)) {
      this.#storeAccount(existing);
      return this.#usernameTaken(account.username);
    }
    // An update of an account the copies heard do not hold (they may all be on servers that are
    // down) would plant it on servers that never had it: refused until the ring can see it.
    if (update && !existing) {
      return this.#tooFewCopies(
        `Cannot update "${account.username}": no copy of the account was heard`,
      );
    }
    // The same registration: its state merges with what the copies hold (an update).
    if (existing) account = mergeAccounts(existing, account);
    const needed = update
      ? this.#copiesNeeded()
      : Math.max(this.#copiesNeeded(), this.#majorityOfReplicaSet());
    if (1 + this.#replicaTargets().length < needed) {
      return this.#tooFewCopies(
        `Cannot register "${account.username}": ${needed} copies needed, the ring has ${
          1 + this.#replicaTargets().length
        } servers`,
      );
    }
    const added = store.accounts.put(account) === "added";
    const outcome = await this.#replicateCounting(
      { v: 1, type: "account_put", account, coordinate: false },
      needed - 1,
    );
    if (outcome === "ok") return { v: 1, type: "ok", count: 1 };
    // Refused: the name stays free here (a copy that reached a replica is the same registration,
    // which the client's retry with the same password turns into an acknowledged one).
    if (added) store.accounts.delete(account.username);
    return outcome === "taken" ? this.#usernameTaken(account.username) : this.#quorumFailed();
  }

  /** A strict majority of the replica set's copies (the primary's own among them). */
  #majorityOfReplicaSet(): number {
    return Math.floor(this.#replicaSetSize() / 2) + 1;
  }

  /**
   * Read on the primary: the oldest registration among its own copy and its replicas' (the same
   * registration's copies merged). "No such account" only when a majority of the replica set's
   * copies was heard, this server sees a majority of the cluster, and more than half of the
   * servers that would hold the account on the whole known ring answered; otherwise
   * `quorum_failed` (the caller retries, then is told unavailable).
   */
  async #coordinateAccountGet(username: string): Promise<ReplicationResponse> {
    const { ring } = this.#deps;
    const ringKey = ring.ringKeyOf(username);
    if (!ring.isPrimaryFor(ringKey)) return await this.#notResponsible(ringKey);
    const { account, copies, heardHolders, holders } = await this.#readAccountCopies(username);
    if (account) {
      this.#storeAccount(account); // read repair: the primary lacked (or lost) its copy
      return { v: 1, type: "account", account };
    }
    if (copies < this.#majorityOfReplicaSet() || !this.#seesMajority()) {
      return this.#tooFewCopies(
        `Cannot tell whether "${username}" exists: heard ${copies} of the ${this.#replicaSetSize()} copies`,
      );
    }
    if (2 * heardHolders <= holders && holders > 0) {
      return this.#tooFewCopies(
        `Cannot tell whether "${username}" exists: ${heardHolders} of the ${holders} servers that hold its copies answered`,
      );
    }
    return { v: 1, type: "account" };
  }

  /** Stores a copy of `account` here; if that replaced another registration, says so. */
  #storeAccount(account: AccountRecord): void {
    const before = this.#deps.store.accounts.get(account.username);
    if (this.#deps.store.accounts.put(account) === "replaced" && before) {
      this.#accountReplaced({ winner: account, loser: before });
    }
  }

  /**
   * What the copies of `username` say, read on its primary: the winning registration among this
   * server's copy, its K successors' and those of every server that held the user's records on
   * the whole known ring, down ones included (while most of those are silent, all copies may be
   * on them). `copies` counts the replica set's copies heard for sure: a server still catching up
   * (this one too) may lack the account only because its disk is old, so its answer counts only
   * when it holds the account; `heardHolders` of the `holders` answered for sure.
   */
  async #readAccountCopies(username: string): Promise<{
    account: AccountRecord | undefined;
    copies: number;
    heardHolders: number;
    holders: number;
  }> {
    const { ring, store } = this.#deps;
    const ringKey = ring.ringKeyOf(username);
    const holders = ring.expectedHolders?.(ringKey, this.#k, this.#deps.knownServers?.() ?? []) ??
      [];
    const replicas = this.#replicaTargets();
    const asked = [...new Set([...replicas, ...holders])].filter((a) => a !== ring.self);
    const request: ReplicationRequest = {
      v: 1,
      type: "account_get",
      username,
      coordinate: false,
    };
    // One round for all of them, so a name with and one without an account cost the same.
    const answers = await Promise.allSettled(asked.map((a) => this.#callPeer(a, request)));
    let account = store.accounts.get(username);
    const answered = new Set(account || !this.#staleAccounts() ? [ring.self] : []);
    answers.forEach((a, i) => {
      if (a.status !== "fulfilled" || a.value.type !== "account") return;
      if (!a.value.stale || a.value.account) answered.add(asked[i]!);
      if (a.value.account) {
        account = account ? mergeAccounts(account, a.value.account) : a.value.account;
      }
    });
    return {
      account,
      copies: (answered.has(ring.self) ? 1 : 0) + replicas.filter((r) => answered.has(r)).length,
      heardHolders: holders.filter((h) => answered.has(h)).length,
      holders: holders.length,
    };
  }

  /**
   * Presence write on the primary. The coordinator's clock orders writes (the sender's clock
   * only gives the time to live), an offline write from a server that is no longer the user's
   * home is ignored, and a change of status is reported to the {@link onPresenceChange} listeners.
   */
  async #coordinatePresencePut(records: PresenceRecord[]): Promise<ReplicationResponse> {
    const { ring, store } = this.#deps;
    for (const r of records) {
      if (!ring.isPrimaryFor(r.ringKey)) return await this.#notResponsible(r.ringKey);
    }
    const now = this.#now();
    const applied: PresenceRecord[] = [];
    const changed: [PresenceRecord, boolean][] = [];
    // Read side by side: a record this primary lacks is asked of its replicas.
    const currents = await Promise.all(records.map((r) => this.#currentPresence(r.username)));
    for (const [i, r] of records.entries()) {
      const current = currents[i];
      const wasOnline = current !== undefined && current.expiresAt > now;
      const goingOnline = r.expiresAt > r.updatedAt;
      if (!goingOnline && wasOnline && current.home !== r.home) continue;
      const updatedAt = this.#nextSeq();
      const record: PresenceRecord = {
        ...r,
        updatedAt,
        expiresAt: goingOnline ? updatedAt + (r.expiresAt - r.updatedAt) : updatedAt,
      };
      applied.push(record);
      if (goingOnline !== wasOnline || (goingOnline && current?.home !== r.home)) {
        changed.push([record, goingOnline]);
      }
    }
    // One transaction for the whole request (a refresh batch holds many records).
    store.presence.put(applied);
    for (const [record, online] of changed) this.#presenceChanged(record, online);
    if (applied.length) {
      // Soft state: the copies on the successors only speed up reads after the primary changes.
      void this.#replicate({ v: 1, type: "presence_put", records: applied, coordinate: false });
    }
    return { v: 1, type: "ok", count: applied.length };
  }

  async #coordinatePresenceGet(username: string): Promise<ReplicationResponse> {
    const ringKey = this.#deps.ring.ringKeyOf(username);
    if (!this.#deps.ring.isPrimaryFor(ringKey)) return await this.#notResponsible(ringKey);
    const record = await this.#currentPresence(username);
    return record ? { v: 1, type: "presence", record } : { v: 1, type: "presence" };
  }

  /** The primary's presence record of `username`, else the newest a successor holds. */
  async #currentPresence(username: string): Promise<PresenceRecord | undefined> {
    const own = this.#deps.store.presence.get(username);
    if (own) return own;
    let best: PresenceRecord | undefined;
    for (
      const a of await this.#askReplicas({
        v: 1,
        type: "presence_get",
        username,
        coordinate: false,
      })
    ) {
      if (a.type !== "presence" || !a.record) continue;
      if (!best || a.record.updatedAt > best.updatedAt) best = a.record;
    }
    if (best) this.#deps.store.presence.put([best]);
    return best;
  }

  /** Sends `request` to this primary's K successors; the answers of those that answered. */
  async #askReplicas(request: ReplicationRequest): Promise<ReplicationResponse[]> {
    const answers = await Promise.allSettled(
      this.#replicaTargets().map((r) => this.#callPeer(r, request)),
    );
    return answers.filter((a) => a.status === "fulfilled").map((a) => a.value);
  }

  /** Refuses a coordinated request for a key this node is not primary for, naming who is. */
  async #notResponsible(ringKey: string): Promise<ReplicationResponse> {
    this.#deps.metrics.inc("p2pchat_replication_redirects_total");
    const response: ReplicationResponse = {
      v: 1,
      type: "error",
      code: "not_responsible",
      message: `${this.#deps.ring.self} is not the primary for ${ringKey}`,
    };
    try {
      response.replicaSet = await this.#deps.ring.replicaSet(ringKey, this.#k);
    } catch {
      // The ring is repairing: the caller looks the key up again.
    }
    return response;
  }

  /** Hybrid logical clock: wall time, but strictly increasing on this coordinator. */
  #nextSeq(): number {
    this.#lastSeq = Math.max(this.#now(), this.#lastSeq + 1);
    return this.#lastSeq;
  }

  /**
   * A put on the primary. Concurrent puts share one durable transaction and one replication RPC
   * per replica (group commit, see {@link Batcher}); each still gets its own answer.
   */
  async #coordinatePut(entries: MailboxEntry[]): Promise<ReplicationResponse> {
    for (const e of entries) {
      if (!this.#deps.ring.isPrimaryFor(e.ringKey)) return await this.#notResponsible(e.ringKey);
    }
    return await this.#puts.submit(entries);
  }

  /**
   * One batch of puts, in submission order: each is checked against the quotas as if the ones
   * before it in the batch were stored, sequenced, and the accepted ones are stored in one
   * transaction and sent to the replicas in one request. A put refused (quota, no longer the
   * primary) or failing alone changes nothing and does not hold back the others.
   */
  async #flushPuts(batch: readonly MailboxEntry[][]): Promise<Settled<ReplicationResponse>[]> {
    const { ring, store } = this.#deps;
    const answers: Settled<ReplicationResponse>[] = [];
    const ok = (value: ReplicationResponse): Settled<ReplicationResponse> => ({ ok: true, value });
    if (1 + this.#replicaTargets().length < this.#copiesNeeded()) {
      const refusal = this.#tooFewCopies(
        `${this.#copiesNeeded()} durable copies needed, the ring has ${
          1 + this.#replicaTargets().length
        } servers`,
      );
      return batch.map(() => ok(refusal));
    }
    // Pending counts (bounds, exact where a quota would refuse; see PendingBounds), plus what
    // the puts accepted so far in this batch add, for the quotas of the ones after them.
    const bounds = this.#pendingBounds;
    const addedTo = new Map<string, number>();
    const addedFrom = new Map<string, PendingTally>();
    const counts: QuotaCounts = {
      to: (recipient, exact) => bounds.to(recipient, exact) + (addedTo.get(recipient) ?? 0),
      from: (recipient, sender, exact) => {
        const pending = bounds.from(recipient, sender, exact);
        // Usernames hold no "/".
        const added = addedFrom.get(`${recipient}/${sender}`);
        return added
          ? { count: pending.count + added.count, chars: pending.chars + added.chars }
          : pending;
      },
    };
    const accepted: { index: number; entries: MailboxEntry[] }[] = [];
    for (const [index, entries] of batch.entries()) {
      const foreign = entries.find((e) => !ring.isPrimaryFor(e.ringKey));
      if (foreign) {
        answers.push(ok(await this.#notResponsible(foreign.ringKey)));
        continue;
      }
      const refusal = this.#quotaRefusal(entries, counts);
      if (refusal) {
        answers.push(ok(refusal));
        continue;
      }
      for (const e of entries) {
        addedTo.set(e.recipient, (addedTo.get(e.recipient) ?? 0) + 1);
        const key = `${e.recipient}/${e.sender}`;
        const added = addedFrom.get(key);
        if (added) {
          added.count++;
          added.chars += e.envelope.length;
        } else addedFrom.set(key, { count: 1, chars: e.envelope.length });
      }
      // A retry keeps the seq this primary gave the message before, so every copy gets the same.
      const sequenced = entries.map((e) => ({
        ...e,
        seq: store.mailbox.seqOf(e.recipient, e.messageId) ?? this.#nextSeq(),
      }));
      answers.push(ok({ v: 1, type: "ok", count: entries.length }));
      accepted.push({ index, entries: sequenced });
    }
    if (!accepted.length) return answers;
    let stored = accepted;
    const syncLater = { syncLater: true };
    try {
      store.mailbox.insert(accepted.flatMap((a) => a.entries), syncLater);
    } catch {
      // One put the transaction could not take fails alone: the others are stored one by one.
      stored = [];
      for (const a of accepted) {
        try {
          store.mailbox.insert(a.entries, syncLater);
          stored.push(a);
        } catch (error) {
          answers[a.index] = { ok: false, error };
        }
      }
      if (!stored.length) return answers;
    }
    // This copy reaches the disk while the replicas store theirs: acknowledged once both are
    // durable. A copy that fails to reach the disk here fails the puts (the sender retries).
    const [local, replicated] = await Promise.all([
      store.mailbox.synced().then(() => undefined, (error: unknown) => ({ error })),
      this.#replicate({
        v: 1,
        type: "put",
        entries: stored.flatMap((a) => a.entries),
        coordinate: false,
      }),
    ]);
    for (const a of stored) {
      if (local) answers[a.index] = { ok: false, error: local.error };
      else if (!replicated) answers[a.index] = ok(this.#quorumFailed());
      else {
        this.#deps.metrics.inc("p2pchat_mailbox_stored_total", undefined, a.entries.length);
      }
    }
    this.#deps.metrics.inc("p2pchat_mailbox_group_commits_total");
    return answers;
  }

  /**
   * The refusal of a put whose entries would take a mailbox, or one sender's share of it, past
   * its quota (`counts` tells how many are pending), or undefined.
   */
  #quotaRefusal(
    entries: readonly MailboxEntry[],
    counts: QuotaCounts,
  ): ReplicationResponse | undefined {
    const adding = new Map<string, number>();
    for (const e of entries) adding.set(e.recipient, (adding.get(e.recipient) ?? 0) + 1);
    for (const [recipient, n] of adding) {
      if (counts.to(recipient) + n > this.#quota && counts.to(recipient, true) + n > this.#quota) {
        this.#deps.metrics.inc("p2pchat_mailbox_rejected_total", { reason: "quota" });
        return {
          v: 1,
          type: "error",
          code: "mailbox_full",
          message: `Mailbox of "${recipient}" is full (${this.#quota} messages): try again later`,
        };
      }
    }
    const bySender = new Map<
      string,
      { recipient: string; sender: string; count: number; chars: number; large: boolean }
    >();
    for (const e of entries) {
      const key = `${e.recipient}/${e.sender}`;
      let put = bySender.get(key);
      if (!put) {
        bySender.set(
          key,
          put = { recipient: e.recipient, sender: e.sender, count: 0, chars: 0, large: false },
        );
      }
      put.count++;
      put.chars += e.envelope.length;
      if (e.envelope.length >= LARGE_ENTRY) put.large = true;
    }
    for (const { recipient, sender, count: n, chars, large } of bySender.values()) {
      const over = (p: PendingTally) =>
        (large && p.chars + chars > this.#senderBytes) || p.count + n > this.#quotaPerSender;
      let pending = counts.from(recipient, sender);
      if (over(pending)) pending = counts.from(recipient, sender, true);
      // Characters are counted only for a put holding a file chunk: text messages are bounded
      // by the message quota.
      if (large && pending.chars + chars > this.#senderBytes) {
        this.#deps.metrics.inc("p2pchat_mailbox_rejected_total", { reason: "sender_bytes" });
        return {
          v: 1,
          type: "error",
          code: "quota_exceeded",
          message: `The mailbox of "${recipient}" already holds ${mib(pending.chars)} from ` +
            `you; one sender may leave at most ${mib(this.#senderBytes)} there: send this when ` +
            `"${recipient}" is online, or once they have read what waits`,
        };
      }
      if (pending.count + n > this.#quotaPerSender) {
        this.#deps.metrics.inc("p2pchat_mailbox_rejected_total", { reason: "sender_quota" });
        return {
          v: 1,
          type: "error",
          code: "mailbox_full",
          message: `The mailbox of "${recipient}" already holds ${this.#quotaPerSender} ` +
            `messages from you, the most one sender may leave: try again once they have read them`,
        };
      }
    }
    return undefined;
  }

  async #coordinateAck(tombstones: Tombstone[]): Promise<ReplicationResponse> {
    for (const t of tombstones) {
      if (!this.#deps.ring.isPrimaryFor(t.ringKey)) return await this.#notResponsible(t.ringKey);
    }
    if (1 + this.#replicaTargets().length < this.#copiesNeeded()) {
      return this.#tooFewCopies(`${this.#copiesNeeded()} durable copies needed for an ack`);
    }
    return await this.#acks.submit(tombstones);
  }

  /**
   * One batch of acks (concurrent ones, e.g. the pages of a drained mailbox acknowledged at
   * once): one durable transaction here and one request per replica for all of them; each ack
   * gets its own answer and receipts. An ack whose key this server no longer holds as primary
   * is refused alone.
   */
  async #flushAcks(batch: readonly Tombstone[][]): Promise<Settled<ReplicationResponse>[]> {
    const answers: Settled<ReplicationResponse>[] = [];
    const accepted: { index: number; tombstones: Tombstone[] }[] = [];
    for (const [index, tombstones] of batch.entries()) {
      const foreign = tombstones.find((t) => !this.#deps.ring.isPrimaryFor(t.ringKey));
      answers.push({ ok: true, value: { v: 1, type: "ok", count: tombstones.length } });
      if (foreign) {
        answers[index] = { ok: true, value: await this.#notResponsible(foreign.ringKey) };
      } else accepted.push({ index, tombstones });
    }
    if (!accepted.length) return answers;
    const all = accepted.flatMap((a) => a.tombstones);
    // Who sent each entry, as stored (the recipient's word is not taken for it): the receipts.
    const senders = new Map<string, string>();
    for (const e of this.#deps.store.mailbox.entries(all.map((t) => [t.recipient, t.messageId]))) {
      senders.set(`${e.recipient}/${e.messageId}`, e.sender); // usernames hold no "/"
    }
    this.#deps.store.mailbox.tombstone(all, { syncLater: true });
    const local = this.#deps.store.mailbox.synced().then(
      () => undefined,
      (error: unknown) => ({ error }),
    );
    // Answered once every replica asked has answered (W copies among them), not as soon as W
    // copies are durable: a replica left holding the entry as pending would hand it out again
    // if the servers holding the tombstone went down before the next repair round.
    this.#deps.metrics.inc("p2pchat_mailbox_ack_commits_total");
    const ok = (await this.#replicateCounting(
      { v: 1, type: "ack", tombstones: all, coordinate: false },
      this.#copiesNeeded() - 1,
      true,
    )) === "ok";
    const failed = await local;
    for (const { index, tombstones } of accepted) {
      if (failed) {
        answers[index] = { ok: false, error: failed.error };
        continue;
      }
      const receipts: { messageId: string; sender: string }[] = [];
      for (const t of tombstones) {
        const sender = senders.get(`${t.recipient}/${t.messageId}`);
        if (sender !== undefined) receipts.push({ messageId: t.messageId, sender });
      }
      answers[index] = {
        ok: true,
        value: ok ? { v: 1, type: "ok", count: tombstones.length, receipts } : this.#quorumFailed(),
      };
    }
    return answers;
  }

  /**
   * A read on the primary: the pending entries of every copy it hears, minus every message any
   * of those copies has tombstoned. The primary's tombstones alone are not enough: a primary
   * restarted from an old disk (or one that was not the primary when the ack was taken) still
   * holds acknowledged messages as pending until its repair round, while the copies that took the
   * ack hold their tombstones.
   * So each replica is told which ids the primary holds and answers with those it deleted; an id
   * only some replica holds (the primary lacks it) is checked against the other replicas'
   * tombstones too. An acknowledged message is returned only if every copy heard lacks its
   * tombstone — never while a reachable copy that took the ack is in the replica set.
   */
  async #coordinateFetch(recipient: string, ringKey: string): Promise<ReplicationResponse> {
    if (!this.#deps.ring.isPrimaryFor(ringKey)) return await this.#notResponsible(ringKey);
    const own = this.#deps.store.mailbox.pending(recipient);
    const ids = own.map((e) => e.messageId);
    const replicas = this.#replicaTargets();
    const answers = await Promise.allSettled(
      replicas.map((r) =>
        this.#callPeer(r, {
          v: 1,
          type: "fetch",
          recipient,
          ringKey,
          coordinate: false,
          ids,
          brief: true,
        })
      ),
    );
    const merged = new Map<string, MailboxEntry>();
    const deleted = new Set<string>();
    /** Replicas that answered, with the ids each holds as pending. */
    const heard: { replica: string; pending: Set<string>; stale: boolean }[] = [];
    for (const [i, a] of answers.entries()) {
      if (a.status !== "fulfilled" || a.value.type !== "entries") continue;
      for (const e of a.value.entries) merged.set(e.messageId, e);
      for (const id of a.value.deleted ?? []) deleted.add(id);
      heard.push({
        replica: replicas[i]!,
        // (A replica of an older version ignores `brief`: it sends every entry, no `held`.)
        pending: new Set([...a.value.entries.map((e) => e.messageId), ...a.value.held ?? []]),
        stale: a.value.stale === true,
      });
    }
    // The primary's own copies win (they carry the coordinator's sequence number).
    for (const e of own) merged.set(e.messageId, e);
    const held = new Set(ids);
    for (const id of this.#deletedOf(recipient, [...merged.keys()].filter((id) => !held.has(id)))) {
      deleted.add(id);
    }
    // Ids the primary lacks, reported pending by some replica: asked of the replicas that did not.
    const unchecked = [...merged.keys()].filter((id) => !held.has(id) && !deleted.has(id));
    if (unchecked.length) {
      const asks = heard.map(async ({ replica, pending }) => {
        const pairs = unchecked.filter((id) => !pending.has(id)).map((id): [string, string] => [
          recipient,
          id,
        ]);
        if (!pairs.length) return;
        const res = await this.#deps.call(replica, {
          v: 1,
          type: "get_items",
          entries: [],
          tombstones: pairs,
        });
        if (res.type === "items") { for (const t of res.tombstones) deleted.add(t.messageId); }
      });
      await Promise.allSettled(asks);
    }
    if (deleted.size) {
      this.#deps.metrics.inc("p2pchat_mailbox_stale_pending_total", undefined, deleted.size);
    }
    // Unless every replica answered, an entry only this primary holds may be one acknowledged
    // while it was away or frozen (its tombstone on copies it did not hear): it waits for a fetch
    // that hears them all, or for the repair that copies it to an answering replica. Nothing is
    // lost, and an acknowledged message is not handed out again. A copy still catching up after
    // a restart (this primary or a replica, see `catchingUp`) confirms nothing: its pending
    // entries may be ones acknowledged while it was down, as stale as the primary's.
    // And nothing is handed out unless a majority of the replica set's copies that are not
    // catching up was heard (this primary's own among them): with W of them holding each
    // tombstone, such a read meets one of them, also when one of the copies heard is a stale one.
    const fresh = heard.filter((h) => !h.stale);
    const freshCopies = (this.#staleMail() ? 0 : 1) + fresh.length;
    const quorum = freshCopies >= this.#majorityOfReplicaSet();
    const heardAll = !this.#staleMail() &&
      this.#replicaSetMembers().every((m) => fresh.some((h) => h.replica === m));
    const confirmed = (id: string) => quorum && (heardAll || fresh.some((h) => h.pending.has(id)));
    const withheld: string[] = [];
    const entries = [...merged.values()].filter((e) => {
      if (deleted.has(e.messageId)) return false;
      if (confirmed(e.messageId)) return true;
      withheld.push(e.messageId);
      return false;
    }).sort((a, b) => a.seq - b.seq || (a.messageId < b.messageId ? -1 : 1));
    if (withheld.length) {
      this.#deps.metrics.inc("p2pchat_mailbox_fetch_withheld_total", undefined, withheld.length);
      this.#deps.log("fetch_withheld", {
        recipient,
        withheld: withheld.length,
        first: withheld[0],
        catchingUp: this.#staleMail(),
        heard: heard.map((h) => h.stale ? `${h.replica} (stale)` : h.replica),
      });
    }
    return { v: 1, type: "entries", entries };
  }

  /** This primary's first K distinct successors, suspect ones included. */
  #replicaSetMembers(): string[] {
    const self = this.#deps.ring.self;
    return [...new Set(this.#deps.ring.successors().filter((a) => a !== self))].slice(0, this.#k);
  }

  /** Which of `ids` in `recipient`'s mailbox this node holds a tombstone of. */
  #deletedOf(recipient: string, ids: readonly string[]): Set<string> {
    return new Set(this.#deps.store.mailbox.deletedOf(recipient, ids));
  }

  #quorumFailed(): ReplicationResponse {
    this.#deps.metrics.inc("p2pchat_replication_quorum_failed_total");
    return {
      v: 1,
      type: "error",
      code: "quorum_failed",
      message: "Fewer than W copies are durable",
    };
  }

  /**
   * Sends a replica request to the K distinct successors; true once W - 1 of them stored it (W as
   * {@link copiesNeeded} counts it: never lowered by a shrunken ring).
   */
  async #replicate(request: ReplicationRequest): Promise<boolean> {
    return (await this.#replicateCounting(request, this.#copiesNeeded() - 1)) === "ok";
  }

  /**
   * Sends a replica request to the K distinct successors: "ok" once `needed` answered ok (with
   * `all`, only once every one has answered or failed), "taken" if one holds an older
   * registration, else "failed" once all have answered.
   */
  async #replicateCounting(
    request: ReplicationRequest,
    needed: number,
    all = false,
  ): Promise<"ok" | "taken" | "failed"> {
    const replicas = this.#replicaTargets();
    if (needed <= 0 && !all) {
      void Promise.allSettled(replicas.map((r) => this.#callPeer(r, request)));
      return "ok";
    }
    if (replicas.length < needed) return "failed";
    if (!replicas.length) return "ok";
    return await new Promise((resolve) => {
      let succeeded = 0;
      let settled = 0;
      let taken = false;
      for (const r of replicas) {
        this.#callPeer(r, request).then(
          (res) => {
            if (res.type === "ok" && ++succeeded === needed && !all) resolve("ok");
            if (res.type === "error" && res.code === "username_taken") taken = true;
          },
          () => {},
        ).finally(() => {
          if (++settled === replicas.length) {
            resolve(succeeded >= needed ? "ok" : taken ? "taken" : "failed");
          }
        });
      }
    });
  }

  // --- repair ------------------------------------------------------------------------------

  /** Starts the periodic repair rounds. */
  start(): void {
    // Entries past the retention (a disk or backup that was away long) go before anything reads
    // or repairs from them.
    this.#deps.store.mailbox.expire(this.#now() - this.#maxAgeMs);
    this.#running = true;
    this.#catchingUp = true;
    this.#startedAt = this.#now();
    this.#ownAddresses = new Set([
      this.#deps.ring.self,
      ...this.#deps.store.noteOwnAddress(this.#deps.ring.self, this.#now()),
    ]);
    this.#catchUpLoop = (async () => {
      while (this.#running && this.#catchingUp) {
        await this.#catchUp();
        if (this.#catchingUp) await sleep(CATCH_UP_RETRY_MS);
      }
    })();
    const loop = () => {
      if (!this.#running) return;
      this.#timer = setTimeout(() => {
        this.#round = this.repairRound().finally(() => {
          this.#round = undefined;
          loop();
        });
      }, this.#intervalMs);
    };
    loop();
  }

  /** Stops the rounds and waits for the one in flight. */
  async stop(): Promise<void> {
    this.#running = false;
    clearTimeout(this.#timer);
    await this.#round;
    await this.#catchUpLoop;
  }

  /**
   * One attempt to catch up after the start (see {@link catchingUp}): asks every live server for
   * the tombstones it holds of this server's pending entries, and for the accounts this server
   * should hold and lacks, and stores them (a tombstone replaces its entry). Done once every live
   * server answered and so did every server of the known cluster — or, for those that stay
   * down, once `catchUpMaxWaitMs` passed since the start. Never throws.
   */
  async #catchUp(): Promise<void> {
    const { ring, store, log, metrics } = this.#deps;
    try {
      if (!this.#catchingUp || !ring.primaryRange() || !this.#seesMajority()) return;
      const pairs = store.mailbox.itemKeys({ start: "0", end: "0" }).filter((k) => k[0] === "m")
        .map((k): [string, string] => [k[1], k[2]]);
      const known = [...new Set(this.#deps.knownServers?.() ?? [])];
      const mine = (username: string) =>
        ring.expectedHolders?.(ring.ringKeyOf(username), this.#k, known).includes(ring.self) ??
          false;
      const peers = [...new Set(this.#liveServers())].filter((a) => a !== ring.self);
      const answered = new Set<string>();
      let tombstones = 0;
      let accounts = 0;
      await Promise.all(peers.map(async (peer) => {
        const ask = (request: ReplicationRequest) =>
          this.#callPeer(peer, request).catch(() => undefined);
        for (let i = 0; i < pairs.length; i += CATCH_UP_BATCH) {
          const res = await ask({
            v: 1,
            type: "get_items",
            entries: [],
            tombstones: pairs.slice(i, i + CATCH_UP_BATCH),
          });
          if (res?.type !== "items") return;
          if (res.tombstones.length) {
            tombstones += res.tombstones.length;
            this.#putItems({ tombstones: res.tombstones });
          }
        }
        const dir = await ask({ v: 1, type: "directory" });
        if (dir?.type !== "directory") return;
        const missing = dir.usernames.filter((u) => mine(u) && !store.accounts.get(u));
        if (missing.length) {
          const res = await ask({
            v: 1,
            type: "get_items",
            entries: [],
            tombstones: [],
            accounts: missing,
          });
          if (res?.type !== "items") return;
          accounts += res.accounts?.length ?? 0;
          this.#putItems({ accounts: res.accounts ?? [] });
        }
        answered.add(peer);
      }));
      const silent = peers.filter((p) => !answered.has(p));
      // An earlier address of this server (a restart on another port) holds nothing newer than
      // this disk: it is this server. Waiting for it to answer would wait out catchUpMaxWaitMs.
      const absent = known.filter((h) => !this.#ownAddresses.has(h) && !answered.has(h));
      const waited = this.#now() - this.#startedAt;
      if (silent.length || (absent.length && waited < this.#catchUpMaxWaitMs)) {
        if (tombstones || accounts) {
          log("catch_up_partial", { tombstones, accounts, silent, absent });
        }
        return;
      }
      this.#catchingUp = false;
      metrics.inc("p2pchat_replication_caught_up_total");
      log("caught_up", {
        pending: pairs.length,
        tombstones,
        accounts,
        asked: peers.length,
        ...(absent.length ? { absent } : {}),
        ...(this.#ownAddresses.size > 1 ? { formerAddresses: this.#formerAddresses() } : {}),
        ms: waited,
      });
    } catch (err) {
      log("catch_up_failed", { error: String(err) });
    }
  }

  /** The addresses this server's database was served at before this one. */
  #formerAddresses(): string[] {
    return [...this.#ownAddresses].filter((a) => a !== this.#deps.ring.self);
  }

  /**
   * One repair round: mark roles, sync the primary range with each of the K successors, hand
   * off and drop what this node no longer holds, expire old entries. Never throws.
   */
  async repairRound(): Promise<void> {
    const { ring, store, metrics } = this.#deps;
    try {
      metrics.inc("p2pchat_replication_rounds_total");
      this.#clusterSize(); // remember how large the cluster has been
      await this.#sweepPresence();
      const primary = ring.primaryRange();
      // A copy catching up after a restart takes no part in anti-entropy: its pending entries
      // may be ones acknowledged while it was down, which a sync would copy as pending.
      if (primary && !this.#staleMail()) {
        store.markPrimary(primary);
        for (const peer of ring.successors().slice(0, this.#k)) {
          await this.#syncRange(peer, primary);
        }
        await this.#handOffAndDrop();
      }
      store.mailbox.expire(this.#now() - this.#maxAgeMs);
      this.#collectTombstones();
      const counts = store.mailbox.counts();
      metrics.set("p2pchat_mailbox_entries", counts.primary, { held_as: "primary" });
      metrics.set("p2pchat_mailbox_entries", counts.replica, { held_as: "replica" });
      metrics.set("p2pchat_mailbox_tombstones", counts.tombstones);
      const accounts = store.accountCounts();
      metrics.set("p2pchat_account_copies", accounts.primary, { held_as: "primary" });
      metrics.set("p2pchat_account_copies", accounts.replica, { held_as: "replica" });
    } catch (err) {
      metrics.inc("p2pchat_replication_errors_total");
      this.#deps.log("replication_round_failed", { error: String(err) });
    }
  }

  /** Tombstones acknowledged before this are collected (and never stored again). */
  #tombstoneHorizon(): number {
    return this.#now() - this.#maxAgeMs - this.#tombstoneMarginMs;
  }

  /**
   * Deletes the tombstones older than the horizon (at most every
   * {@link ReplicatorOptions.tombstoneGcEveryMs}): their entries are past the retention on every
   * server, and no path stores such an entry again (see MailboxStore.retain).
   */
  #collectTombstones(): void {
    const now = this.#now();
    if (now - this.#lastTombstoneGc < this.#tombstoneGcEveryMs) return;
    this.#lastTombstoneGc = now;
    const collected = this.#deps.store.mailbox.collectTombstones(this.#tombstoneHorizon());
    if (collected) {
      this.#deps.metrics.inc("p2pchat_mailbox_tombstones_collected_total", undefined, collected);
    }
    this.#deps.metrics.set(
      "p2pchat_mailbox_too_old_dropped",
      this.#deps.store.mailbox.droppedTooOld,
    );
  }

  /**
   * Presence upkeep on the primaries: users whose record expired, or whose home server is no
   * longer alive, are reported offline (the latter also written offline); long-expired records
   * are deleted.
   */
  async #sweepPresence(): Promise<void> {
    const { ring, store } = this.#deps;
    const now = this.#now();
    const since = this.#lastPresenceSweep || now - 60_000;
    this.#lastPresenceSweep = now;
    for (const r of store.presence.expiredBetween(since, now)) {
      if (ring.isPrimaryFor(r.ringKey)) this.#presenceChanged(r, false);
    }
    const isLive = this.#deps.isLive;
    if (isLive) {
      const orphans = store.presence.online(now).filter((r) =>
        !isLive(r.home) && ring.isPrimaryFor(r.ringKey)
      );
      if (orphans.length) {
        await this.#coordinatePresencePut(
          orphans.map((r) => ({ ...r, updatedAt: now, expiresAt: now })),
        );
      }
    }
    store.presence.collect(now - 10 * 60_000);
  }

  /**
   * Anti-entropy for one range with one peer: digests first (kept up to date on every write, so
   * cheap), then, where they differ, the keys and only the items missing on either side.
   *
   * Digests that differ while writes are under way are expected (a write stored here and still
   * on its way there), so the keys of a peer are not listed at every round while it is known to
   * be in sync: its digest matched, or a listing brought it up to date, less than
   * {@link SYNC_SKIP_MAX_MS} ago, and since then no call to it failed or was refused (every write
   * sent to it was stored). A peer that restarts or falls behind fails a call (or answers that
   * it is catching up) and is listed at the next round.
   */
  async #syncRange(peer: string, range: KeyRange): Promise<void> {
    const { store, metrics } = this.#deps;
    const call = (request: ReplicationRequest) => this.#callPeer(peer, request);
    const rangeId = `${range.start}/${range.end}`;
    const failures = this.#failedCalls.get(peer) ?? 0;
    const startedAt = this.#now();
    const theirs = await call({ v: 1, type: "digest", range });
    if (theirs.type !== "digest") return;
    if (theirs.digest === store.digest(range).digest) {
      this.#inSync.set(peer, { range: rangeId, at: startedAt, failures });
      return;
    }
    const known = this.#inSync.get(peer);
    if (
      known && known.range === rangeId && known.failures === failures &&
      startedAt - known.at < SYNC_SKIP_MAX_MS && !this.#deps.isSuspect?.(peer)
    ) {
      metrics.inc("p2pchat_replication_sync_skipped_total");
      return;
    }
    const res = await call({ v: 1, type: "keys", range });
    if (res.type !== "keys") return;
    const local = store.itemKeys(range);
    const key = (k: ItemKey) => k.join("/");
    const tombKey = (k: ItemKey) => `t/${k[1]}/${k[2]}`;
    const theirSet = new Set(res.items.map(key));
    const localSet = new Set(local.map(key));
    // An item is missing on a side that has neither it nor its tombstone.
    const theyLack = local.filter((k) => !theirSet.has(key(k)) && !theirSet.has(tombKey(k)));
    const weLack = res.items.filter((k) => !localSet.has(key(k)) && !localSet.has(tombKey(k)));
    if (theyLack.length) {
      const pushed = await call({ v: 1, type: "push", ...store.items(theyLack) });
      if (pushed.type !== "ok") return;
      metrics.inc("p2pchat_replication_repaired_total", { direction: "pushed" }, theyLack.length);
    }
    if (weLack.length) {
      const pairs = (kind: "m" | "t") =>
        weLack.filter((k) => k[0] === kind).map((k): [string, string] => [k[1], k[2]]);
      const items = await call({
        v: 1,
        type: "get_items",
        entries: pairs("m"),
        tombstones: pairs("t"),
        accounts: weLack.filter((k) => k[0] === "a").map((k) => k[1]),
      });
      if (items.type !== "items") return;
      this.#putItems(items);
      metrics.inc("p2pchat_replication_repaired_total", { direction: "pulled" }, weLack.length);
    }
    // It holds what this node held when the listing began, unless a call to it failed since.
    this.#inSync.set(peer, { range: rangeId, at: startedAt, failures });
  }

  /**
   * Items outside `(p_{K+1}, self]` belong to ranges this node no longer replicates: each ring
   * key's items go to that key's current replica set, and are deleted here only once every
   * member has them. Nothing is dropped while the predecessor chain cannot be read.
   */
  async #handOffAndDrop(): Promise<void> {
    const { ring, store, call, metrics } = this.#deps;
    const chain = await ring.predecessorChain(this.#k + 1);
    if (!chain || chain.length < this.#k + 1) return;
    const addresses = new Set([ring.self, ...chain.map((m) => m.address)]);
    if (addresses.size < this.#k + 2) return; // a ring of ≤ K+1 nodes: every node holds everything
    const keep: KeyRange = { start: chain[this.#k]!.id, end: ring.primaryRange()!.end };
    const outside = store.itemKeysOutside(keep);
    const byRingKey = new Map<string, ItemKey[]>();
    for (const [ringKey, item] of outside) {
      byRingKey.set(ringKey, [...(byRingKey.get(ringKey) ?? []), item]);
    }
    for (const [ringKey, items] of byRingKey) {
      const replicas = await ring.replicaSet(ringKey, this.#k);
      if (replicas.includes(ring.self)) continue; // the ring moved again: still ours
      const push: ReplicationRequest = { v: 1, type: "push", ...store.items(items) };
      const results = await Promise.allSettled(replicas.map((r) => call(r, push)));
      if (results.every((r) => r.status === "fulfilled" && r.value.type === "ok")) {
        const dropped = store.deleteRingKey(ringKey);
        metrics.inc("p2pchat_replication_handed_off_total", undefined, dropped);
        this.#deps.log("range_handed_off", { ringKey, to: replicas, items: dropped });
      }
    }
  }

  /** Hands every item this node holds to the replica sets that will hold it after it leaves. */
  async handOffAll(): Promise<void> {
    const successor = this.#deps.ring.successors()[0];
    if (!successor) return;
    if (this.#staleMail()) {
      // What it holds may be stale (see `catchingUp`); its pending entries have W copies elsewhere.
      this.#deps.log("hand_off_skipped", { reason: "catching up after a restart" });
      return;
    }
    const { store } = this.#deps;
    const all = store.itemKeys({ start: "0", end: "0" });
    await this.#deps.call(successor, { v: 1, type: "push", ...store.items(all) }).catch((err) =>
      this.#deps.log("hand_off_failed", { successor, error: String(err) })
    );
  }
}
