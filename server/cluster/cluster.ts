/**
 * The walking skeleton's cluster: membership from a static seed list plus gossip (every hello
 * carries the sender's known peers), presence (every hello carries the sender's online users), a
 * full copy of the account directory on every server, and delivery of frames to a user's home
 * server. The CHORD ring and K-successor replication replace the placement here; the seams are
 * {@link Cluster.register}, {@link Cluster.homeOf} and {@link Cluster.liveServers}.
 */
import type {
  AccountRecord,
  ClusterRequest,
  ClusterResponse,
  ServerFrame,
} from "../../shared/mod.ts";
import { parseClusterRequest, ProtocolError } from "../../shared/mod.ts";
import type { NodeStore } from "../store/mod.ts";
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
  store: NodeStore;
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
  /**
   * Durable copies of a new account before registration is acknowledged (capped at the number
   * of live servers). @default 2
   */
  accountCopies?: number;
}

/** No server that may hold the record could be reached. */
export class UnavailableError extends Error {
  override name = "UnavailableError";
}

interface PeerState {
  alive: boolean;
  lastOk: number;
  online: Set<string>;
}

const MAX_BODY = 8 * 1024 * 1024;

/** 32-bit FNV-1a: a cheap, stable score for rendezvous placement. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** Membership, presence, account directory and frame delivery across servers. */
export class Cluster {
  #deps: ClusterDeps;
  #self: string;
  #helloIntervalMs: number;
  #peerTimeoutMs: number;
  #rpcTimeoutMs: number;
  #accountCopies: number;
  #peers = new Map<string, PeerState>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #round: Promise<void> | undefined;
  #syncing = new Set<string>();

  /** Creates the cluster view of one server; call {@link start} to begin the hello rounds. */
  constructor(deps: ClusterDeps, options: ClusterOptions) {
    this.#deps = deps;
    this.#self = options.self;
    this.#helloIntervalMs = options.helloIntervalMs ?? 1000;
    this.#peerTimeoutMs = options.peerTimeoutMs ?? 3500;
    this.#rpcTimeoutMs = options.rpcTimeoutMs ?? 2000;
    this.#accountCopies = options.accountCopies ?? 2;
    for (const seed of options.seeds ?? []) this.#addPeer(seed);
    deps.metrics.describe("p2pchat_cluster_peers_alive", "gauge", "Other servers currently alive");
    deps.metrics.describe(
      "p2pchat_cluster_rejected_total",
      "counter",
      "Cluster RPC requests rejected (bad signature or invalid body)",
    );
  }

  /** This server's base URL. */
  get self(): string {
    return this.#self;
  }

  /** Starts periodic hello rounds (the first one immediately). */
  start(): void {
    this.helloNow();
    this.#timer = setInterval(() => this.helloNow(), this.#helloIntervalMs);
  }

  /** Stops the hello rounds and waits for the one in flight. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#round;
  }

  /** Runs a hello round now unless one is in flight (used when local presence changes). */
  helloNow(): void {
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

  /** Whether `username` has a session on any live server. */
  isOnline(username: string): boolean {
    return this.homeOf(username) !== undefined;
  }

  /** The base URL of the server holding `username`'s session, if any. */
  homeOf(username: string): string | undefined {
    if (this.#deps.local.hasSession(username)) return this.#self;
    for (const [address, peer] of this.#peers) {
      if (peer.alive && peer.online.has(username)) return address;
    }
    return undefined;
  }

  /**
   * Registers a new account through its coordinator (rendezvous hashing over live servers), which
   * checks uniqueness and copies it to every live server. Returns false if the name is taken.
   */
  async register(account: AccountRecord): Promise<boolean> {
    const order = this.liveServers().sort((a, b) =>
      fnv1a(`${b}|${account.username}`) - fnv1a(`${a}|${account.username}`)
    );
    for (const server of order) {
      if (server === this.#self) return await this.#registerAsCoordinator(account);
      try {
        const res = await callPeer(
          this.#deps.hmac,
          server,
          { v: 1, type: "register", account },
          this.#rpcTimeoutMs,
        );
        if (res.type === "ok") {
          this.#deps.store.insertAccount(account);
          return true;
        }
        if (res.type === "error" && res.code === "username_taken") return false;
        if (res.type === "error") throw new Error(res.message);
      } catch (err) {
        this.#deps.log("register_forward_failed", { server, error: String(err) });
      }
    }
    throw new UnavailableError("No server could register the account");
  }

  /**
   * Inserts a new account and copies it to every live server; acknowledges only once
   * `accountCopies` copies (capped at the live servers) are durable. Otherwise the local insert is
   * undone and {@link UnavailableError} thrown, so an acknowledged account is never a lone copy.
   */
  async #registerAsCoordinator(account: AccountRecord): Promise<boolean> {
    const { store, hmac } = this.#deps;
    if (!store.insertAccount(account)) return false;
    const alive = [...this.#peers].filter(([, p]) => p.alive).map(([address]) => address);
    const results = await Promise.allSettled(
      alive.map((address) =>
        callPeer(hmac, address, { v: 1, type: "account_put", account }, this.#rpcTimeoutMs)
      ),
    );
    const copies = 1 +
      results.filter((r) => r.status === "fulfilled" && r.value.type === "ok").length;
    if (copies < Math.min(this.#accountCopies, 1 + alive.length)) {
      store.deleteAccount(account.username);
      this.#deps.log("register_not_durable", { username: account.username, copies });
      throw new UnavailableError(
        `Only ${copies} of ${this.#accountCopies} copies of the new account could be stored`,
      );
    }
    return true;
  }

  /** Delivers a signal/relay frame to `to` wherever their session is; false if offline. */
  async deliver(to: string, frame: ServerFrame): Promise<boolean> {
    if (this.#deps.local.deliverLocal(to, frame)) return true;
    const home = this.homeOf(to);
    if (!home || home === this.#self) return false;
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
    return Response.json(await this.#dispatch(request));
  }

  #reject(status: number, code: "bad_frame" | "not_authenticated", message: string): Response {
    const body: ClusterResponse = { v: 1, type: "error", code, message };
    return Response.json(body, { status });
  }

  async #dispatch(request: ClusterRequest): Promise<ClusterResponse> {
    const { store } = this.#deps;
    switch (request.type) {
      case "hello": {
        if (request.from !== this.#self) {
          this.#markAlive(request.from, new Set(request.online));
          for (const p of request.peers) this.#addPeer(p);
          if (request.accountCount > store.countAccounts()) this.#syncAccounts(request.from);
        }
        return {
          v: 1,
          type: "hello",
          peers: this.liveServers(),
          accountCount: store.countAccounts(),
        };
      }
      case "accounts":
        return { v: 1, type: "accounts", accounts: store.listAccounts() };
      case "register":
        try {
          return (await this.#registerAsCoordinator(request.account))
            ? { v: 1, type: "ok" }
            : { v: 1, type: "error", code: "username_taken", message: "Username is taken" };
        } catch (err) {
          if (!(err instanceof UnavailableError)) throw err;
          return { v: 1, type: "error", code: "unavailable", message: err.message };
        }
      case "account_put":
        store.insertAccount(request.account);
        return { v: 1, type: "ok" };
      case "deliver":
        return this.#deps.local.deliverLocal(request.to, request.frame)
          ? { v: 1, type: "ok" }
          : { v: 1, type: "error", code: "peer_offline", message: `${request.to} is offline` };
    }
  }

  #addPeer(address: string): void {
    if (address === this.#self || this.#peers.has(address)) return;
    this.#peers.set(address, { alive: false, lastOk: 0, online: new Set() });
  }

  /** Applies a change of one peer's state, telling local clients whose presence changed. */
  #updatePeer(address: string, change: (peer: PeerState) => void): void {
    const peer = this.#peers.get(address);
    if (!peer) return;
    const before = new Set(peer.alive ? peer.online : []);
    const onlineBefore = new Map([...before].map((u) => [u, this.isOnline(u)]));
    change(peer);
    const after = new Set(peer.alive ? peer.online : []);
    const touched = new Set([...before, ...after]);
    for (const u of touched) {
      const was = onlineBefore.get(u) ?? this.#isOnlineExcept(u, address);
      const now = this.isOnline(u);
      if (was !== now) this.#deps.local.presenceChanged(u, now);
    }
    this.#deps.metrics.set(
      "p2pchat_cluster_peers_alive",
      [...this.#peers.values()].filter((p) => p.alive).length,
    );
  }

  #isOnlineExcept(username: string, except: string): boolean {
    if (this.#deps.local.hasSession(username)) return true;
    for (const [address, peer] of this.#peers) {
      if (address !== except && peer.alive && peer.online.has(username)) return true;
    }
    return false;
  }

  #markAlive(address: string, online: Set<string>): void {
    this.#addPeer(address);
    this.#updatePeer(address, (peer) => {
      if (!peer.alive) this.#deps.log("peer_up", { peer: address });
      peer.alive = true;
      peer.lastOk = Date.now();
      peer.online = online;
    });
  }

  async #helloRound(): Promise<void> {
    const { store, local, hmac } = this.#deps;
    const request: ClusterRequest = {
      v: 1,
      type: "hello",
      from: this.#self,
      peers: this.liveServers(),
      online: local.onlineUsernames(),
      accountCount: store.countAccounts(),
    };
    await Promise.all([...this.#peers.keys()].map(async (address) => {
      try {
        const res = await callPeer(hmac, address, request, this.#rpcTimeoutMs);
        if (res.type !== "hello") throw new PeerUnreachableError(address, `answered ${res.type}`);
        const peer = this.#peers.get(address);
        if (peer) {
          peer.lastOk = Date.now();
          if (!peer.alive) this.#updatePeer(address, (p) => p.alive = true);
        }
        for (const p of res.peers) this.#addPeer(p);
        if (res.accountCount > store.countAccounts()) this.#syncAccounts(address);
      } catch (err) {
        const peer = this.#peers.get(address);
        if (peer?.alive && Date.now() - peer.lastOk > this.#peerTimeoutMs) {
          this.#deps.log("peer_down", { peer: address, error: String(err) });
          this.#updatePeer(address, (p) => {
            p.alive = false;
            p.online = new Set();
          });
        }
      }
    }));
  }

  /** Copies every account `address` has that this server lacks (anti-entropy, full list). */
  #syncAccounts(address: string): void {
    if (this.#syncing.has(address)) return;
    this.#syncing.add(address);
    callPeer(this.#deps.hmac, address, { v: 1, type: "accounts" }, this.#rpcTimeoutMs * 5)
      .then((res) => {
        if (res.type !== "accounts") return;
        let added = 0;
        for (const account of res.accounts) if (this.#deps.store.insertAccount(account)) added++;
        if (added) this.#deps.log("accounts_synced", { from: address, added });
      })
      .catch((err) => this.#deps.log("accounts_sync_failed", { from: address, error: String(err) }))
      .finally(() => this.#syncing.delete(address));
  }
}
