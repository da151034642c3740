/**
 * The cluster view of one server: membership (a static seed list and discovery, then gossip:
 * every hello carries the sender's live peers), the account registry and presence as ring
 * records (through the {@link Replicator}: each lives on the primary for the user's ring key and
 * K successors), and delivery of frames to a user's home server.
 *
 * Presence: a home server writes a record with a time to live when a session starts, refreshes
 * it while the session lives, and writes it offline when the session ends. The primary of the
 * record tells every live server when the status changes (and when a record expires or its home
 * server dies); each server keeps those notices in a cache that answers "is X online, and
 * where?" without a ring lookup, re-reads the whole directory periodically, and falls back to the
 * ring record when a delivery finds nothing in the cache.
 */
import {
  type AccountRecord,
  type ClusterRequest,
  type ClusterResponse,
  parseClusterRequest,
  PRESENCE_TIMEOUT_MS,
  ProtocolError,
  type ServerFrame,
} from "../../shared/mod.ts";
import type { PresenceRecord } from "../store/mod.ts";
import {
  type Replicator,
  StorageUnavailableError,
  UsernameTakenError,
} from "../replication/mod.ts";
import type { Metrics } from "../api/metrics.ts";
import type { Hmac } from "./hmac.ts";
import { callPeer, isAuthentic, PeerUnreachableError } from "./rpc.ts";

/** What the cluster needs from the server's own connected clients (implemented by the API). */
export interface LocalSessions {
  /** Usernames with a live session on this server. */
  onlineUsernames(): string[];
  /** Whether `username` has a live session on this server (a lookup, not a scan). */
  hasSession(username: string): boolean;
  /** Hands `frame` to the local session of `username`; false if there is none. */
  deliverLocal(username: string, frame: ServerFrame): boolean;
  /** Told when a user's cluster-wide online status changes. */
  presenceChanged(username: string, online: boolean): void;
}

/** A structured log sink: an event name and fields. */
export type Log = (event: string, fields?: Record<string, unknown>) => void;

/** Collaborators of a {@link Cluster}. */
export interface ClusterDeps {
  metrics: Metrics;
  hmac: Hmac;
  local: LocalSessions;
  log: Log;
}

/** Configuration of a {@link Cluster}. */
export interface ClusterOptions {
  /** This server's base URL as other servers and browsers reach it. */
  self: string;
  /** Base URLs of servers to contact at start. @default [] */
  seeds?: string[];
  /** Period of the hello round, in ms. @default 1000 */
  helloIntervalMs?: number;
  /** A peer silent this long is considered dead, in ms. @default 3500 */
  peerTimeoutMs?: number;
  /** Timeout of one RPC, in ms. @default 2000 */
  rpcTimeoutMs?: number;
  /** Period at which local sessions' presence records are refreshed, in ms. @default 5000 */
  presenceRefreshMs?: number;
  /** Time to live of a presence record, in ms. @default PRESENCE_TIMEOUT_MS */
  presenceTtlMs?: number;
  /** Period at which the presence cache is re-read from the whole ring, in ms. @default 15000 */
  directoryRefreshMs?: number;
}

/** No server that may hold the record could be reached. */
export class UnavailableError extends Error {
  override name = "UnavailableError";
}

interface PeerState {
  alive: boolean;
  lastOk: number;
}

/** What this server last heard of another server's session of a user. */
interface CachedPresence {
  home: string;
  updatedAt: number;
}

const MAX_BODY = 8 * 1024 * 1024;
/** Longest wait for in-flight presence work at shutdown, in ms. */
const STOP_WAIT_MS = 2_000;
/** Accounts never change once created: lookups are cached, this many at most. */
const ACCOUNT_CACHE_SIZE = 10_000;

/** Membership, ring-held registry and presence, and frame delivery across servers. */
export class Cluster {
  #deps: ClusterDeps;
  #self: string;
  #helloIntervalMs: number;
  #peerTimeoutMs: number;
  #rpcTimeoutMs: number;
  #presenceRefreshMs: number;
  #presenceTtlMs: number;
  #directoryRefreshMs: number;
  #peers = new Map<string, PeerState>();
  #timers: ReturnType<typeof setInterval>[] = [];
  #round: Promise<void> | undefined;
  #storage: Replicator | undefined;
  #presence = new Map<string, CachedPresence>();
  #accounts = new Map<string, AccountRecord>();
  #pending = new Set<Promise<unknown>>();

  /** Creates the cluster view of one server; call {@link start} to begin the hello rounds. */
  constructor(deps: ClusterDeps, options: ClusterOptions) {
    this.#deps = deps;
    this.#self = options.self;
    this.#helloIntervalMs = options.helloIntervalMs ?? 1000;
    this.#peerTimeoutMs = options.peerTimeoutMs ?? 3500;
    this.#rpcTimeoutMs = options.rpcTimeoutMs ?? 2000;
    this.#presenceRefreshMs = options.presenceRefreshMs ?? 5000;
    this.#presenceTtlMs = options.presenceTtlMs ?? PRESENCE_TIMEOUT_MS;
    this.#directoryRefreshMs = options.directoryRefreshMs ?? 15_000;
    for (const seed of options.seeds ?? []) this.#addPeer(seed);
    deps.metrics.describe("p2pchat_cluster_peers_alive", "gauge", "Other servers currently alive");
    deps.metrics.describe(
      "p2pchat_cluster_rejected_total",
      "counter",
      "Cluster RPC requests rejected (bad signature or invalid body)",
    );
    deps.metrics.describe(
      "p2pchat_presence_cached",
      "gauge",
      "Users on other servers this server believes online",
    );
  }

  /** This server's base URL. */
  get self(): string {
    return this.#self;
  }

  /**
   * Connects the ring storage that holds accounts and presence. Call before {@link start};
   * the replicator's `onPresenceChange` should be {@link presenceNotice}.
   */
  attachStorage(storage: Replicator): void {
    this.#storage = storage;
  }

  /** Starts the periodic rounds: hellos (the first one immediately), presence, directory. */
  start(): void {
    this.#helloNow();
    this.#timers.push(setInterval(() => this.#helloNow(), this.#helloIntervalMs));
    this.#timers.push(setInterval(() => this.#refreshLocalPresence(), this.#presenceRefreshMs));
    this.#timers.push(setInterval(() => this.#track(this.directory()), this.#directoryRefreshMs));
  }

  /**
   * Stops the rounds and waits for the work in flight (presence writes and notices), at most
   * `STOP_WAIT_MS`: when the whole ring shuts down at once, those writes could only retry.
   */
  async stop(): Promise<void> {
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    await this.#round;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.allSettled([...this.#pending]),
      new Promise((r) => timer = setTimeout(r, STOP_WAIT_MS)),
    ]);
    clearTimeout(timer);
  }

  /** Runs a hello round now unless one is in flight. */
  #helloNow(): void {
    if (this.#round) return;
    this.#round = this.#helloRound().finally(() => this.#round = undefined);
  }

  /**
   * Adds a server learned from outside (discovery announcements, DNS): it is contacted in the
   * next hello round and becomes live once it answers. Unknown or own addresses are ignored.
   */
  addPeer(address: string): void {
    this.#addPeer(address);
  }

  /** Every server address this node knows of, alive or not (sorted). */
  knownServers(): string[] {
    return [this.#self, ...this.#peers.keys()].sort();
  }

  /** This server and every peer currently alive, sorted. */
  liveServers(): string[] {
    const alive = [...this.#peers].filter(([, p]) => p.alive).map(([a]) => a);
    return [this.#self, ...alive].sort();
  }

  /** Whether the server at `address` is this one or a peer currently alive. */
  isLive(address: string): boolean {
    return address === this.#self || this.#peers.get(address)?.alive === true;
  }

  /** Whether `username` has a session on any live server, as far as this server knows. */
  isOnline(username: string): boolean {
    return this.homeOf(username) !== undefined;
  }

  /** The base URL of the server holding `username`'s session, if known. */
  homeOf(username: string): string | undefined {
    if (this.#deps.local.hasSession(username)) return this.#self;
    const cached = this.#presence.get(username);
    // What this server's own sessions are is known locally, never from the cache.
    if (!cached || cached.home === this.#self || !this.isLive(cached.home)) return undefined;
    return cached.home;
  }

  // --- accounts ------------------------------------------------------------------------------

  /**
   * Registers a new account on the ring: acknowledged once W copies are durable. Returns false
   * if the name is taken; throws {@link UnavailableError} if the ring cannot store it now.
   */
  async register(account: AccountRecord): Promise<boolean> {
    try {
      await this.#ring().registerAccount(account);
      this.#cacheAccount(account);
      return true;
    } catch (err) {
      if (err instanceof UsernameTakenError) return false;
      if (err instanceof StorageUnavailableError) throw new UnavailableError(err.message);
      throw err;
    }
  }

  /**
   * The account of `username` from its replica set (cached once found: accounts do not change).
   * Throws {@link UnavailableError} when the ring cannot answer now.
   */
  async account(username: string): Promise<AccountRecord | undefined> {
    const cached = this.#accounts.get(username);
    if (cached) return cached;
    try {
      const account = await this.#ring().getAccount(username);
      if (account) this.#cacheAccount(account);
      return account;
    } catch (err) {
      if (err instanceof StorageUnavailableError) throw new UnavailableError(err.message);
      throw err;
    }
  }

  /**
   * Every registered username (each server lists the accounts it holds; the union is the
   * directory). Also refreshes the presence cache from the online records the servers hold.
   */
  async directory(): Promise<string[]> {
    const asked = Date.now();
    const { usernames, online } = await this.#ring().directory(this.liveServers());
    const fresh = new Map(online.map((r) => [r.username, r]));
    for (const [username, cached] of [...this.#presence]) {
      // A notice that arrived while the servers answered is newer than their answers.
      if (fresh.has(username) || cached.updatedAt >= asked) continue;
      this.#applyPresence(username, cached.home, cached.updatedAt, false);
    }
    for (const r of fresh.values()) this.#applyPresence(r.username, r.home, r.updatedAt, true);
    return usernames;
  }

  #cacheAccount(account: AccountRecord): void {
    if (this.#accounts.size >= ACCOUNT_CACHE_SIZE) {
      this.#accounts.delete(this.#accounts.keys().next().value!);
    }
    this.#accounts.set(account.username, account);
  }

  #ring(): Replicator {
    if (!this.#storage) throw new UnavailableError("Ring storage is not attached yet");
    return this.#storage;
  }

  // --- presence ------------------------------------------------------------------------------

  /**
   * A local session of `username` started (`online`) or ended: writes the user's presence record
   * on the ring. Resolves when written or failed (never rejects); failures are logged and the
   * next refresh round writes again.
   */
  localPresence(username: string, online: boolean): Promise<void> {
    if (!this.#storage) return Promise.resolve();
    const write = this.#storage.publishPresence([{ username, online }], this.#presenceTtlMs)
      .catch((err) =>
        this.#deps.log("presence_write_failed", { username, online, error: String(err) })
      );
    this.#track(write);
    return write;
  }

  /**
   * Called on the primary of a presence record when its status changes: tells every live
   * server (this one included) so they can update their caches and their clients.
   */
  presenceNotice(record: PresenceRecord, online: boolean): void {
    const request: ClusterRequest = {
      v: 1,
      type: "presence",
      username: record.username,
      home: record.home,
      online,
      updatedAt: record.updatedAt,
    };
    this.#applyPresence(record.username, record.home, record.updatedAt, online);
    for (const address of this.liveServers()) {
      if (address === this.#self) continue;
      this.#track(
        callPeer(this.#deps.hmac, address, request, this.#rpcTimeoutMs).catch((err) =>
          this.#deps.log("presence_notice_failed", { to: address, error: String(err) })
        ),
      );
    }
  }

  /** Updates the cache with one notice, telling local clients if the user's status changed. */
  #applyPresence(username: string, home: string, updatedAt: number, online: boolean): void {
    const cached = this.#presence.get(username);
    if (cached && cached.updatedAt > updatedAt) return; // an older notice arriving late
    const was = this.isOnline(username);
    if (online) this.#presence.set(username, { home, updatedAt });
    else if (!cached || cached.home === home) this.#presence.delete(username);
    const now = this.isOnline(username);
    if (was !== now) this.#deps.local.presenceChanged(username, now);
    this.#deps.metrics.set("p2pchat_presence_cached", this.#presence.size);
  }

  #refreshLocalPresence(): void {
    const users = this.#deps.local.onlineUsernames();
    if (!this.#storage || users.length === 0) return;
    this.#track(
      this.#storage.publishPresence(
        users.map((username) => ({ username, online: true })),
        this.#presenceTtlMs,
      ).catch((err) => this.#deps.log("presence_refresh_failed", { error: String(err) })),
    );
  }

  #track(work: Promise<unknown>): void {
    const p = work.catch(() => {}).finally(() => this.#pending.delete(p));
    this.#pending.add(p);
  }

  // --- delivery ------------------------------------------------------------------------------

  /**
   * Delivers a signal/relay frame to `to` wherever their session is; false if offline. When the
   * cache names no home (or a stale one), the presence record on the ring decides.
   */
  async deliver(to: string, frame: ServerFrame): Promise<boolean> {
    if (this.#deps.local.deliverLocal(to, frame)) return true;
    const cached = this.homeOf(to);
    if (cached && cached !== this.#self && (await this.#deliverAt(cached, to, frame))) return true;
    let record: PresenceRecord | undefined;
    try {
      record = await this.#storage?.getPresence(to);
    } catch (err) {
      this.#deps.log("presence_read_failed", { username: to, error: String(err) });
      return false;
    }
    if (!record || record.expiresAt <= Date.now() || !this.isLive(record.home)) return false;
    if (record.home === this.#self || record.home === cached) return false;
    this.#applyPresence(to, record.home, record.updatedAt, true);
    return await this.#deliverAt(record.home, to, frame);
  }

  async #deliverAt(home: string, to: string, frame: ServerFrame): Promise<boolean> {
    try {
      const res = await callPeer(
        this.#deps.hmac,
        home,
        { v: 1, type: "deliver", to, frame },
        this.#rpcTimeoutMs,
      );
      return res.type === "ok";
    } catch (err) {
      this.#deps.log("deliver_failed", { to, home, error: String(err) });
      return false;
    }
  }

  // --- RPC -----------------------------------------------------------------------------------

  /** Handles `POST /cluster/rpc`: authenticates, validates, dispatches. */
  async handleRpc(req: Request): Promise<Response> {
    const length = Number(req.headers.get("content-length") ?? "0");
    if (length > MAX_BODY) return this.#reject(413, "bad_frame", "Request body too large");
    const body = await req.text();
    if (!(await isAuthentic(this.#deps.hmac, req.headers, body))) {
      this.#deps.metrics.inc("p2pchat_cluster_rejected_total", { reason: "auth" });
      this.#deps.log("cluster_rpc_rejected", { reason: "bad or missing signature" });
      return this.#reject(401, "not_authenticated", "Cluster secret mismatch");
    }
    let request: ClusterRequest;
    try {
      request = parseClusterRequest(body);
    } catch (err) {
      const message = err instanceof ProtocolError ? err.message : "Invalid request";
      this.#deps.metrics.inc("p2pchat_cluster_rejected_total", { reason: "invalid" });
      this.#deps.metrics.inc("p2pchat_invalid_frames_total", { source: "peer" });
      return this.#reject(400, "bad_frame", message);
    }
    return Response.json(this.#dispatch(request));
  }

  #reject(status: number, code: "bad_frame" | "not_authenticated", message: string): Response {
    const body: ClusterResponse = { v: 1, type: "error", code, message };
    return Response.json(body, { status });
  }

  #dispatch(request: ClusterRequest): ClusterResponse {
    switch (request.type) {
      case "hello":
        if (request.from !== this.#self) {
          this.#markAlive(request.from);
          for (const p of request.peers) this.#addPeer(p);
        }
        return { v: 1, type: "hello", peers: this.liveServers() };
      case "presence":
        this.#applyPresence(request.username, request.home, request.updatedAt, request.online);
        return { v: 1, type: "ok" };
      case "deliver":
        return this.#deps.local.deliverLocal(request.to, request.frame)
          ? { v: 1, type: "ok" }
          : { v: 1, type: "error", code: "peer_offline", message: `${request.to} is offline` };
    }
  }

  #addPeer(address: string): void {
    if (address === this.#self || this.#peers.has(address)) return;
    this.#peers.set(address, { alive: false, lastOk: 0 });
  }

  /** Applies a change of one peer's liveness, telling local clients whose presence changed. */
  #setAlive(address: string, alive: boolean, fields: Record<string, unknown> = {}): void {
    const peer = this.#peers.get(address);
    if (!peer || peer.alive === alive) return;
    const homed = [...this.#presence].filter(([, p]) => p.home === address).map(([u]) => u);
    const before = new Map(homed.map((u) => [u, this.isOnline(u)]));
    peer.alive = alive;
    this.#deps.log(alive ? "peer_up" : "peer_down", { peer: address, ...fields });
    for (const u of homed) {
      const now = this.isOnline(u);
      if (before.get(u) !== now) this.#deps.local.presenceChanged(u, now);
    }
    if (!alive) { for (const u of homed) this.#presence.delete(u); }
    this.#deps.metrics.set(
      "p2pchat_cluster_peers_alive",
      [...this.#peers.values()].filter((p) => p.alive).length,
    );
  }

  #markAlive(address: string): void {
    this.#addPeer(address);
    this.#peers.get(address)!.lastOk = Date.now();
    this.#setAlive(address, true);
  }

  async #helloRound(): Promise<void> {
    const request: ClusterRequest = {
      v: 1,
      type: "hello",
      from: this.#self,
      peers: this.liveServers(),
    };
    await Promise.all([...this.#peers.keys()].map(async (address) => {
      try {
        const res = await callPeer(this.#deps.hmac, address, request, this.#rpcTimeoutMs);
        if (res.type !== "hello") throw new PeerUnreachableError(address, `answered ${res.type}`);
        this.#markAlive(address);
        for (const p of res.peers) this.#addPeer(p);
      } catch (err) {
        const peer = this.#peers.get(address);
        if (peer?.alive && Date.now() - peer.lastOk > this.#peerTimeoutMs) {
          this.#setAlive(address, false, { error: String(err) });
        }
      }
    }));
  }
}
