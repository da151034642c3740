/**
 * Cluster membership: which servers exist and which are alive. Servers come from a static seed
 * list, discovery, and gossip (every signed `hello` carries the sender's live peers). Every
 * `helloIntervalMs` each peer without a hello in flight gets one, which must be answered within
 * `helloTimeoutMs`: a peer that misses one is *suspect* (still live, but nothing should wait on
 * it: replication picks other copies, ring RPC is not sent to it), and a peer silent for
 * `peerTimeoutMs` is dead. A frozen or cut-off server (which holds its connections open and
 * answers nothing) is thus suspect within about helloIntervalMs + helloTimeoutMs and dead within
 * about peerTimeoutMs + helloIntervalMs. Listeners hear every change of a peer's liveness. Time
 * and the signed transport are injected, so the rounds run on virtual time in tests.
 */
import type { ClusterRequest, ClusterResponse } from "../../shared/mod.ts";
import { type Clock, systemClock, type TimerHandle } from "../../shared/clock.ts";
import type { Log, Metrics } from "../telemetry/mod.ts";
import { PeerUnreachableError } from "./rpc.ts";

/** Sends one signed cluster request (rejects when the peer cannot be reached). */
export type PeerCaller = (address: string, request: ClusterRequest) => Promise<ClusterResponse>;

/** Told when a peer goes up (`alive`) or down. */
export type PeerChangeListener = (address: string, alive: boolean) => void;

/** Collaborators of a {@link Membership}. */
export interface MembershipDeps {
  call: PeerCaller;
  metrics: Metrics;
  log: Log;
  /** @default systemClock */
  clock?: Clock;
}

/** Configuration of a {@link Membership}. */
export interface MembershipOptions {
  /** This server's base URL as other servers (and, by default, browsers) reach it. */
  self: string;
  /**
   * This server's base URL as browsers reach it, told to the other servers in hellos: the
   * fail-over list browsers get is made of these. @default self
   */
  browserUrl?: string;
  /** Base URLs of servers to contact at start. @default [] */
  seeds?: string[];
  /** Period of the hello round, in ms. @default 500 */
  helloIntervalMs?: number;
  /** A hello unanswered this long makes the peer suspect, in ms. @default 1000 */
  helloTimeoutMs?: number;
  /** A peer silent this long is considered dead, in ms. @default 2500 */
  peerTimeoutMs?: number;
}

interface PeerState {
  alive: boolean;
  lastOk: number;
  /** Its last hello went unanswered (a timeout or a refused connection). */
  suspect: boolean;
  /** A hello to it is in flight. */
  asking: Promise<void> | undefined;
}

/** The servers of the cluster, as this one sees them. */
export class Membership {
  #deps: MembershipDeps;
  #clock: Clock;
  #self: string;
  #helloIntervalMs: number;
  #helloTimeoutMs: number;
  #peerTimeoutMs: number;
  #peers = new Map<string, PeerState>();
  #browserUrl: string;
  /** The browser-facing URL each peer announced (absent: the same as its address). */
  #browserUrls = new Map<string, string>();
  #listeners = new Set<PeerChangeListener>();
  #timer: TimerHandle | undefined;
  /** Peers whose answers were not authentic, already logged (once per peer until it answers). */
  #rejecting = new Set<string>();
  /** When the last hello round ran: a round that comes very late means this server was paused. */
  #lastRound: number | undefined;

  /** Creates the view; {@link start} begins the hello rounds. */
  constructor(deps: MembershipDeps, options: MembershipOptions) {
    this.#deps = deps;
    this.#clock = deps.clock ?? systemClock;
    this.#self = options.self;
    this.#browserUrl = options.browserUrl ?? options.self;
    this.#helloIntervalMs = options.helloIntervalMs ?? 500;
    this.#helloTimeoutMs = options.helloTimeoutMs ?? 1000;
    this.#peerTimeoutMs = options.peerTimeoutMs ?? 2500;
    for (const seed of options.seeds ?? []) this.addPeer(seed);
    deps.metrics.describe("p2pchat_cluster_peers_alive", "gauge", "Other servers currently alive");
    deps.metrics.describe(
      "p2pchat_cluster_peers_suspect",
      "gauge",
      "Live servers whose last hello went unanswered",
    );
    deps.metrics.describe(
      "p2pchat_cluster_rejected_total",
      "counter",
      "Signed RPC requests rejected (size, signature or invalid body), by endpoint",
    );
  }

  /** This server's base URL. */
  get self(): string {
    return this.#self;
  }

  /** Starts the hello rounds (the first one at once). */
  start(): void {
    this.#helloNow();
    this.#timer = this.#clock.setInterval(() => this.#helloNow(), this.#helloIntervalMs);
  }

  /** Stops the rounds and waits for the hellos in flight. */
  async stop(): Promise<void> {
    this.#clock.clearInterval(this.#timer);
    this.#timer = undefined;
    await Promise.all([...this.#peers.values()].map((p) => p.asking));
  }

  /** Calls `listener` on every change of a peer's liveness; returns the unsubscriber. */
  onPeerChange(listener: PeerChangeListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Adds a server learned from outside (seeds, discovery, DNS, gossip): it is contacted in the
   * next hello round and becomes live once it answers. Known or own addresses are ignored.
   */
  addPeer(address: string): void {
    if (address === this.#self || this.#peers.has(address)) return;
    this.#peers.set(address, { alive: false, lastOk: 0, suspect: false, asking: undefined });
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

  /**
   * The base URLs browsers reach this server and every live peer at (the fail-over list sent to
   * browsers), sorted, without repeats: servers behind one address give that address once.
   */
  liveBrowserUrls(): string[] {
    return [...new Set(this.liveServers().map((a) => this.#browserUrlOf(a)))].sort();
  }

  /** The browser-facing base URLs of every server this node knows of, alive or not. */
  knownBrowserUrls(): string[] {
    return [...new Set(this.knownServers().map((a) => this.#browserUrlOf(a)))].sort();
  }

  #browserUrlOf(address: string): string {
    return address === this.#self ? this.#browserUrl : this.#browserUrls.get(address) ?? address;
  }

  #learnBrowserUrl(address: string, browserUrl: string | undefined): void {
    if (browserUrl === undefined || browserUrl === address) this.#browserUrls.delete(address);
    else this.#browserUrls.set(address, browserUrl);
  }

  /** Whether the server at `address` is this one or a peer currently alive. */
  isLive(address: string): boolean {
    return address === this.#self || this.#peers.get(address)?.alive === true;
  }

  /**
   * Whether `address` is a peer whose last hello went unanswered: live until it stays silent
   * for the peer timeout, but not worth waiting on.
   */
  isSuspect(address: string): boolean {
    return this.#peers.get(address)?.suspect === true;
  }

  /** The live peers currently suspect, sorted. */
  suspectServers(): string[] {
    return [...this.#peers].filter(([, p]) => p.alive && p.suspect).map(([a]) => a).sort();
  }

  /** Answers a `hello` from another server: it is alive, and so are the peers it lists. */
  receiveHello(hello: Extract<ClusterRequest, { type: "hello" }>): ClusterResponse {
    if (hello.from !== this.#self) {
      this.#markAlive(hello.from);
      this.#learnBrowserUrl(hello.from, hello.browserUrl);
      for (const p of hello.peers) this.addPeer(p);
    }
    return { v: 1, type: "hello", peers: this.liveServers(), ...this.#ownBrowserUrl() };
  }

  /** The `browserUrl` field of this server's hellos (absent when it is the address itself). */
  #ownBrowserUrl(): { browserUrl?: string } {
    return this.#browserUrl === this.#self ? {} : { browserUrl: this.#browserUrl };
  }

  /**
   * Sends a hello to every peer without one in flight, and declares dead every live peer silent
   * past the peer timeout (a frozen peer's hello may still be in flight then).
   */
  #helloNow(): void {
    const now = this.#clock.now();
    // A round later than the peer timeout: this server was paused (SIGSTOP, a stalled event
    // loop), so the silence it sees is its own. Each live peer gets a fresh peer timeout to
    // answer this round's hello instead of being declared dead for it (a thawed server used to
    // drop every peer at once and briefly form a ring of its own).
    if (this.#lastRound !== undefined && now - this.#lastRound > this.#peerTimeoutMs) {
      this.#deps.log("paused", { ms: now - this.#lastRound });
      for (const peer of this.#peers.values()) {
        if (peer.alive) peer.lastOk = Math.max(peer.lastOk, now);
      }
    }
    this.#lastRound = now;
    for (const [address, peer] of this.#peers) {
      if (peer.alive && now - peer.lastOk > this.#peerTimeoutMs) {
        this.#setAlive(address, false, { error: `silent for ${now - peer.lastOk} ms` });
      }
      if (peer.asking) continue;
      peer.asking = this.#hello(address).finally(() => peer.asking = undefined);
    }
  }

  #markAlive(address: string): void {
    this.addPeer(address);
    const peer = this.#peers.get(address)!;
    peer.lastOk = this.#clock.now();
    this.#setSuspect(address, false);
    this.#setAlive(address, true);
  }

  #setSuspect(address: string, suspect: boolean): void {
    const peer = this.#peers.get(address);
    if (!peer || peer.suspect === suspect) return;
    peer.suspect = suspect;
    if (suspect && peer.alive) this.#deps.log("peer_suspect", { peer: address });
    this.#deps.metrics.set("p2pchat_cluster_peers_suspect", this.suspectServers().length);
  }

  #setAlive(address: string, alive: boolean, fields: Record<string, unknown> = {}): void {
    const peer = this.#peers.get(address);
    if (!peer || peer.alive === alive) return;
    peer.alive = alive;
    this.#deps.log(alive ? "peer_up" : "peer_down", { peer: address, ...fields });
    this.#deps.metrics.set(
      "p2pchat_cluster_peers_alive",
      [...this.#peers.values()].filter((p) => p.alive).length,
    );
    for (const listener of this.#listeners) {
      try {
        listener(address, alive);
      } catch (err) {
        this.#deps.log("peer_listener_failed", { peer: address, error: String(err) });
      }
    }
  }

  /** One hello to `address`, cut at the hello timeout. */
  async #hello(address: string): Promise<void> {
    const request: ClusterRequest = {
      v: 1,
      type: "hello",
      from: this.#self,
      peers: this.liveServers(),
      ...this.#ownBrowserUrl(),
    };
    let timer: TimerHandle | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = this.#clock.setTimeout(
        () => reject(new Error(`no answer to hello within ${this.#helloTimeoutMs} ms`)),
        this.#helloTimeoutMs,
      );
    });
    try {
      const res = await Promise.race([this.#deps.call(address, request), late]);
      if (res.type !== "hello") throw new Error(`${address} answered ${res.type}`);
      this.#rejecting.delete(address);
      this.#markAlive(address);
      this.#learnBrowserUrl(address, res.browserUrl);
      for (const p of res.peers) this.addPeer(p);
    } catch (err) {
      if (err instanceof PeerUnreachableError && err.failure === "rejected") {
        if (!this.#rejecting.has(address)) {
          this.#rejecting.add(address);
          // Said once per peer: a wrong secret on either side is the usual cause.
          this.#deps.log("peer_not_authenticated", {
            peer: address,
            error: err.message,
            hint: "every server of one cluster needs the same P2P_CLUSTER_SECRET",
          });
        }
      }
      this.#setSuspect(address, true);
      const peer = this.#peers.get(address);
      if (peer?.alive && this.#clock.now() - peer.lastOk > this.#peerTimeoutMs) {
        this.#setAlive(address, false, { error: String(err) });
      }
    } finally {
      this.#clock.clearTimeout(timer);
    }
  }
}
