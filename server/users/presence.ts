/**
 * Presence: which server is each online user's home. The home server writes the user's record
 * on the ring (a time to live, refreshed while the session lives, written offline when it ends);
 * the record's primary tells every live server when a status changes, and each server keeps
 * those notices in a cache that answers "is X online, and where?" without a ring lookup. The
 * cache is re-read from the whole ring periodically, forgets users homed on a server that died,
 * and a delivery that finds nothing in it reads the ring record ({@link readHome}).
 */
import {
  type ClusterRequest,
  MAX_PRESENCE_BATCH,
  PRESENCE_TIMEOUT_MS,
  type PresenceNotice,
} from "../../shared/mod.ts";
import type { Clock, TimerHandle } from "../../shared/clock.ts";
import type { PresenceRecord } from "../store/mod.ts";
import type { Log, Metrics } from "../telemetry/mod.ts";
import type { LocalSessions } from "./local_sessions.ts";
import type { ClusterCall, MembershipView, PresenceRecords } from "./ports.ts";

/** How long after a peer came alive the cache is read again from the ring, in ms. */
const CATCH_UP_DELAY_MS = 500;

/**
 * The refresh round runs this many times per `refreshMs`, each time writing the records that
 * are due: the writes of thousands of sessions spread over the period instead of one burst
 * (which stalled the event loop long enough for peers to suspect the server).
 */
const REFRESH_SLICES = 10;

/**
 * A status notice a live server did not acknowledge (it was busy past the call's deadline, say)
 * is sent again this many times, the next call to that server waiting 1 s after the failure:
 * otherwise that server's clients would hear of the change only at its next directory round. A
 * late or repeated notice changes nothing (the receiver keeps the newest `updatedAt`).
 */
const NOTICE_RETRIES = 2;
const NOTICE_RETRY_MS = 1000;

/** Notices waiting for one server: the newest per user, and whether a call to it is under way. */
interface Outbox {
  waiting: Map<string, { notice: PresenceNotice; attempt: number }>;
  busy: boolean;
}

/** Collaborators of {@link Presence}. */
export interface PresenceDeps {
  records: PresenceRecords;
  membership: MembershipView;
  call: ClusterCall;
  local: LocalSessions;
  metrics: Metrics;
  log: Log;
  clock: Clock;
}

/** Configuration of {@link Presence}. */
export interface PresenceOptions {
  /** Period at which local sessions' records are refreshed, in ms. @default 5000 */
  refreshMs?: number;
  /** Time to live of a presence record, in ms. @default PRESENCE_TIMEOUT_MS */
  ttlMs?: number;
  /** Period at which the cache is re-read from the whole ring, in ms. @default 15000 */
  directoryRefreshMs?: number;
  /** Longest wait for presence work in flight at {@link Presence.stop}, in ms. @default 2000 */
  stopWaitMs?: number;
}

/** What this server last heard of another server's session of a user. */
interface CachedPresence {
  home: string;
  updatedAt: number;
}

/** The presence of every user, as this server knows it. */
export class Presence {
  #deps: PresenceDeps;
  #refreshMs: number;
  #ttlMs: number;
  #directoryRefreshMs: number;
  #stopWaitMs: number;
  #cache = new Map<string, CachedPresence>();
  /** When each local user's record was last written online (at its login, or a refresh). */
  #writtenAt = new Map<string, number>();
  #timers: TimerHandle[] = [];
  #pending = new Set<Promise<unknown>>();
  #unsubscribe: (() => void)[] = [];
  /** A read of the ring's online records planned after a peer came alive. */
  #catchUp: TimerHandle | undefined;
  /**
   * Status notices per server. One call to a server at a time: the notices that come meanwhile
   * (a burst of logins, a server busy answering) go together in the next call, one
   * `presence_batch`, instead of a call each that a busy server answers too late.
   */
  #outboxes = new Map<string, Outbox>();
  /** Since when each peer the membership reports dead has been dead. */
  #deadSince = new Map<string, number>();
  /** Pauses after a failed notice call, before the next call to that server. */
  #retries = new Set<TimerHandle>();

  /** Creates the service; {@link start} begins its rounds and subscriptions. */
  constructor(deps: PresenceDeps, options: PresenceOptions = {}) {
    this.#deps = deps;
    this.#refreshMs = options.refreshMs ?? 5000;
    this.#ttlMs = options.ttlMs ?? PRESENCE_TIMEOUT_MS;
    this.#directoryRefreshMs = options.directoryRefreshMs ?? 15_000;
    this.#stopWaitMs = options.stopWaitMs ?? 2000;
    deps.metrics.describe(
      "p2pchat_presence_cached",
      "gauge",
      "Users on other servers this server believes online",
    );
  }

  /** Subscribes to ring notices and peer changes and starts the refresh rounds. */
  start(): void {
    const { clock, records, membership } = this.#deps;
    this.#unsubscribe.push(
      records.onPresenceChange((record, online) => this.#announce(record, online)),
      membership.onPeerChange((address, alive) => this.#peerChanged(address, alive)),
    );
    this.#timers.push(
      clock.setInterval(() => this.#refreshLocal(), this.#refreshMs / REFRESH_SLICES),
      clock.setInterval(() => this.#track(this.directory()), this.#directoryRefreshMs),
    );
  }

  /**
   * Stops the rounds and waits for presence work in flight, at most `stopWaitMs`: when the
   * whole ring shuts down at once, those writes could only retry.
   */
  async stop(): Promise<void> {
    const { clock } = this.#deps;
    for (const t of this.#timers) clock.clearInterval(t);
    this.#timers = [];
    clock.clearTimeout(this.#catchUp);
    this.#catchUp = undefined;
    for (const t of this.#retries) clock.clearTimeout(t);
    this.#retries.clear();
    this.#outboxes.clear();
    for (const unsubscribe of this.#unsubscribe) unsubscribe();
    this.#unsubscribe = [];
    let timer: TimerHandle | undefined;
    await Promise.race([
      Promise.allSettled([...this.#pending]),
      new Promise((r) => timer = clock.setTimeout(() => r(undefined), this.#stopWaitMs)),
    ]);
    clock.clearTimeout(timer);
  }

  /** Whether `username` has a session on any live server, as far as this server knows. */
  isOnline(username: string): boolean {
    return this.homeOf(username) !== undefined;
  }

  /** The base URL of the server holding `username`'s session, if known. */
  homeOf(username: string): string | undefined {
    const { local, membership } = this.#deps;
    if (local.hasSession(username)) return membership.self;
    const cached = this.#cache.get(username);
    // What this server's own sessions are is known locally, never from the cache.
    if (!cached || cached.home === membership.self || !membership.isLive(cached.home)) {
      return undefined;
    }
    return cached.home;
  }

  /**
   * The home server of `username` by the ring record, when it names a live server other than
   * this one and `known` (which a caller already tried); the cache learns it.
   */
  async readHome(username: string, known?: string): Promise<string | undefined> {
    const { records, membership, clock, log } = this.#deps;
    let record: PresenceRecord | undefined;
    try {
      record = await records.getPresence(username);
    } catch (err) {
      log("presence_read_failed", { username, error: String(err) });
      return undefined;
    }
    if (!record || record.expiresAt <= clock.now() || !membership.isLive(record.home)) {
      return undefined;
    }
    if (record.home === membership.self || record.home === known) return undefined;
    this.#apply(username, record.home, record.updatedAt, true);
    return record.home;
  }

  /**
   * A local session of `username` started (`online`) or ended: writes the user's record on the
   * ring. Resolves when written or failed (never rejects); a failure is logged and the next
   * refresh writes again.
   */
  publish(username: string, online: boolean): Promise<void> {
    if (online) this.#writtenAt.set(username, this.#deps.clock.now());
    else this.#writtenAt.delete(username);
    const write = this.#deps.records.publishPresence([{ username, online }], this.#ttlMs)
      .catch((err) =>
        this.#deps.log("presence_write_failed", { username, online, error: String(err) })
      );
    this.#track(write);
    return write;
  }

  /** A status notice from the primary of a record (a `presence` request, or one of a batch). */
  receiveNotice(notice: PresenceNotice | Extract<ClusterRequest, { type: "presence" }>): void {
    this.#apply(notice.username, notice.home, notice.updatedAt, notice.online);
  }

  /**
   * Every registered username (each server lists the accounts it holds; the union is the
   * directory). Also refreshes the cache from the online records the servers hold.
   */
  async directory(): Promise<string[]> {
    const { records, membership, clock } = this.#deps;
    const asked = clock.now();
    const { usernames, online } = await records.directory(membership.liveServers());
    const fresh = new Map(online.map((r) => [r.username, r]));
    for (const [username, cached] of [...this.#cache]) {
      // A notice that arrived while the servers answered is newer than their answers.
      if (fresh.has(username) || cached.updatedAt >= asked) continue;
      this.#apply(username, cached.home, cached.updatedAt, false);
    }
    for (const r of fresh.values()) this.#apply(r.username, r.home, r.updatedAt, true);
    return usernames;
  }

  /** On the primary of a record whose status changed: tells every live server, this one too. */
  #announce(record: PresenceRecord, online: boolean): void {
    const { membership } = this.#deps;
    const notice: PresenceNotice = {
      username: record.username,
      home: record.home,
      online,
      updatedAt: record.updatedAt,
    };
    this.#apply(record.username, record.home, record.updatedAt, online);
    for (const address of membership.liveServers()) {
      if (address !== membership.self) this.#enqueue(address, notice, 0);
    }
  }

  /** Queues a status notice for `address` (replacing an older one of the user) and sends. */
  #enqueue(address: string, notice: PresenceNotice, attempt: number): void {
    let box = this.#outboxes.get(address);
    if (!box) this.#outboxes.set(address, box = { waiting: new Map(), busy: false });
    const queued = box.waiting.get(notice.username);
    if (queued && queued.notice.updatedAt > notice.updatedAt) return;
    // Re-inserted: a user's newest notice goes in order of its own time.
    box.waiting.delete(notice.username);
    box.waiting.set(notice.username, { notice, attempt });
    this.#flush(address);
  }

  /**
   * Sends what waits for `address` (at most {@link MAX_PRESENCE_BATCH} notices) unless a call to
   * it is under way; the rest goes when it ends. Notices of a failed call go again (up to
   * {@link NOTICE_RETRIES} times each) in the next call, 1 s later.
   */
  #flush(address: string): void {
    const { call, log, clock, membership } = this.#deps;
    const box = this.#outboxes.get(address);
    if (!box || box.busy || box.waiting.size === 0) return;
    if (this.#timers.length === 0 || !membership.isLive(address)) {
      // Stopped, or the server died: it reads the ring's records when it is back.
      this.#outboxes.delete(address);
      return;
    }
    const batch: { notice: PresenceNotice; attempt: number }[] = [];
    for (const [username, entry] of box.waiting) {
      if (batch.length >= MAX_PRESENCE_BATCH) break;
      batch.push(entry);
      box.waiting.delete(username);
    }
    const request: ClusterRequest = batch.length === 1
      ? { v: 1, type: "presence", ...batch[0]!.notice }
      : { v: 1, type: "presence_batch", notices: batch.map((e) => e.notice) };
    box.busy = true;
    this.#track(
      call(address, request).then(
        () => {
          box.busy = false;
          this.#flush(address);
        },
        (err) => {
          let again = 0;
          for (const { notice, attempt } of batch) {
            // A newer notice of the user waits already: the failed one is moot.
            if (attempt >= NOTICE_RETRIES || box.waiting.has(notice.username)) continue;
            box.waiting.set(notice.username, { notice, attempt: attempt + 1 });
            again++;
          }
          log("presence_notice_failed", {
            to: address,
            error: String(err),
            notices: batch.length,
            again,
          });
          const timer = clock.setTimeout(() => {
            this.#retries.delete(timer);
            box.busy = false;
            this.#flush(address);
          }, NOTICE_RETRY_MS);
          this.#retries.add(timer);
        },
      ),
    );
  }

  /** Updates the cache with one notice, telling local clients if the user's status changed. */
  #apply(username: string, home: string, updatedAt: number, online: boolean): void {
    const cached = this.#cache.get(username);
    if (cached && cached.updatedAt > updatedAt) return; // an older notice arriving late
    const was = this.isOnline(username);
    if (online) this.#cache.set(username, { home, updatedAt });
    else if (!cached || cached.home === home) this.#cache.delete(username);
    const now = this.isOnline(username);
    if (was !== now) this.#deps.local.broadcastPresence(username, now);
    this.#deps.metrics.set("p2pchat_presence_cached", this.#cache.size);
  }

  /**
   * A peer went up or down: users homed there change status for local clients. What the cache
   * knows of a dead peer's users is kept (hidden while it is dead) for as long as their records
   * live: a peer thought dead for a moment (too busy to answer hellos) is back with its users
   * routable at once, not after a read of the whole ring's directory.
   */
  #peerChanged(address: string, alive: boolean): void {
    const { clock } = this.#deps;
    const deadAt = this.#deadSince.get(address);
    if (alive) {
      this.#deadSince.delete(address);
      // Dead for longer than a record lives: what the cache knew of it is stale (its users were
      // reported offline when it died).
      if (deadAt !== undefined && clock.now() - deadAt >= this.#ttlMs) {
        for (const [u, p] of [...this.#cache]) if (p.home === address) this.#cache.delete(u);
      }
    } else {
      if (deadAt === undefined) this.#deadSince.set(address, clock.now());
      this.#outboxes.delete(address);
    }
    const homed = [...this.#cache].filter(([, p]) => p.home === address).map(([u]) => u);
    // The membership already reports the new state: a user homed there was online iff it is
    // not alive now (and the other way round).
    for (const u of homed) {
      if (!this.#deps.local.hasSession(u)) this.#deps.local.broadcastPresence(u, alive);
    }
    this.#deps.metrics.set("p2pchat_presence_cached", this.#cache.size);
    // A server seen alive (at this server's start, each peer it finds; or one back from a
    // failure) holds sessions this cache may not know: read the ring's online records soon,
    // once for peers found together, rather than at the next round (contacts homed there would
    // read offline until then).
    if (alive && this.#catchUp === undefined && this.#timers.length > 0) {
      this.#catchUp = this.#deps.clock.setTimeout(() => {
        this.#catchUp = undefined;
        this.#track(this.directory());
      }, CATCH_UP_DELAY_MS);
    }
  }

  /** Writes again the records of local sessions last written about `refreshMs` ago. */
  #refreshLocal(): void {
    const { local, clock } = this.#deps;
    const now = clock.now();
    // A record is written again `refreshMs` (plus at most one slice) after its last write.
    const dueBefore = now - this.#refreshMs;
    const online = new Set(local.onlineUsernames());
    for (const u of this.#writtenAt.keys()) if (!online.has(u)) this.#writtenAt.delete(u);
    const due: string[] = [];
    for (const u of online) {
      if ((this.#writtenAt.get(u) ?? -Infinity) > dueBefore) continue;
      due.push(u);
      this.#writtenAt.set(u, now);
    }
    if (due.length === 0) return;
    this.#track(
      this.#deps.records.publishPresence(
        due.map((username) => ({ username, online: true })),
        this.#ttlMs,
      ).catch((err) => this.#deps.log("presence_refresh_failed", { error: String(err) })),
    );
  }

  #track(work: Promise<unknown>): void {
    const p = work.catch(() => {}).finally(() => this.#pending.delete(p));
    this.#pending.add(p);
  }
}
