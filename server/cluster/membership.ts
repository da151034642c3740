/**
 * Cluster membership: which servers exist and which are alive. Servers come from a static seed
 * list, discovery, and gossip (every signed `hello` carries the sender's live peers). Every
 * `helloIntervalMs` each peer without a hello in flight gets one.
 *
 * - **Suspect** (fast, cheap): a hello unanswered after `helloTimeoutMs` makes the peer suspect:
 *   still live, but nothing should wait on it (replication picks other copies, ring RPC is not
 *   sent to it unless every live peer is suspect at once: then the fault is likelier this
 *   server's own). Only an answer to one of this server's hellos clears it. A frozen or cut-off
 *   server is thus suspect within about helloIntervalMs + helloTimeoutMs.
 * - **Dead** (slow, expensive: the ring changes, keys move): a live peer that gives no sign of
 *   life for its own peer timeout. A sign of life is an answer to a hello, even one that comes
 *   after the hello timeout (a hello runs on for the peer timeout), and, through
 *   {@link Membership.heardFrom}, any authenticated request from the peer and any authentic
 *   answer from it. The peer timeout starts at `peerTimeoutMs`; a peer heard again within
 *   `flapWindowMs` of being declared dead was busy, not gone: its timeout doubles (up to
 *   `maxPeerTimeoutMs`) and halves back every `flapDecayMs` it is not declared dead. A refused
 *   connection (no process listening; a busy one still accepts) uses the base timeout.
 * - **Own lag**: silence this server could not hear is not the peer's: when a hello round comes
 *   late (a stalled event loop, SIGSTOP), every live peer's silence is credited with the delay,
 *   and a hello deadline that fires late is re-checked once pending answers have been read.
 * - **Forgetting**: a peer that is not alive for `forgetAfterMs` (seeds excepted) is dropped, and
 *   gossip does not bring it back: only its own hello, discovery or an operator does.
 *
 * Listeners hear every change of a peer's liveness. Time and the signed transport are injected,
 * so the rounds run on virtual time in tests.
 */
import type { ClusterRequest, ClusterResponse } from "../../shared/mod.ts";
import { type Clock, systemClock, type TimerHandle } from "../../shared/clock.ts";
import type { Log, Metrics } from "../telemetry/mod.ts";
import { PeerUnreachableError } from "./rpc.ts";

/**
 * Sends one signed cluster request (rejects when the peer cannot be reached); `timeoutMs`, when
 * given, is how long the request may take.
 */
export type PeerCaller = (
  address: string,
  request: ClusterRequest,
  timeoutMs?: number,
) => Promise<ClusterResponse>;

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
  /** Base URLs of servers to contact at start (never forgotten). @default [] */
  seeds?: string[];
  /** Period of the hello round, in ms. @default 500 */
  helloIntervalMs?: number;
  /** A hello unanswered this long makes the peer suspect, in ms. @default 1000 */
  helloTimeoutMs?: number;
  /** A peer without a sign of life this long is dead, in ms (the base value). @default 2500 */
  peerTimeoutMs?: number;
  /** Largest a flapping peer's timeout grows to, in ms. @default 4 × peerTimeoutMs */
  maxPeerTimeoutMs?: number;
  /** A peer heard again this soon after being declared dead is flapping, in ms. @default 30000 */
  flapWindowMs?: number;
  /** A grown peer timeout halves after this long without the peer dying, in ms. @default 60000 */
  flapDecayMs?: number;
  /** A peer (not a seed) not alive this long is forgotten, in ms. @default 600000 */
  forgetAfterMs?: number;
}

/** A timer firing later than this past its due time means this server itself lagged. */
const LAG_TOLERANCE_MS = 200;
/** After a late hello deadline, how long pending answers get before the verdict, in ms. */
const LAG_RECHECK_MS = 100;
/** Most forgotten addresses remembered (so gossip does not bring them back). */
const MAX_FORGOTTEN = 1000;

interface PeerState {
  alive: boolean;
  /** Time of its last sign of life (0: never). */
  lastOk: number;
  /** Its last hello went unanswered (a timeout or a refused connection). */
  suspect: boolean;
  /** Its last hello failed with a refused connection: no process is listening there. */
  refused: boolean;
  /** A hello to it is in flight. */
  asking: Promise<void> | undefined;
  /** Ends the wait for the hello in flight (at stop). */
  abandon: (() => void) | undefined;
  /** Its current peer timeout, in ms. */
  timeoutMs: number;
  /** When it was last declared dead. */
  downAt: number | undefined;
  /** Since when its timeout has not grown nor has it been declared dead (decay counts from it). */
  calmSince: number;
  /** Since when it has not been alive (added, or declared dead). */
  notAliveSince: number;
  /** Given at start: never forgotten. */
  seed: boolean;
}

/** The servers of the cluster, as this one sees them. */
export class Membership {
  #deps: MembershipDeps;
  #clock: Clock;
  #self: string;
  #helloIntervalMs: number;
  #helloTimeoutMs: number;
  #peerTimeoutMs: number;
  #maxPeerTimeoutMs: number;
  #flapWindowMs: number;
  #flapDecayMs: number;
  #forgetAfterMs: number;
  #peers = new Map<string, PeerState>();
  #seeds: Set<string>;
  /** Addresses forgotten (dead too long) → when: gossip does not add them again. */
  #forgotten = new Map<string, number>();
  #browserUrl: string;
  /** The browser-facing URL each peer announced (absent: the same as its address). */
  #browserUrls = new Map<string, string>();
  #listeners = new Set<PeerChangeListener>();
  #timer: TimerHandle | undefined;
  /** Peers whose answers were not authentic, already logged (once per peer until it answers). */
  #rejecting = new Set<string>();
  /** When the last hello round ran: a round that comes late means this server lagged. */
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
    this.#maxPeerTimeoutMs = Math.max(
      this.#peerTimeoutMs,
      options.maxPeerTimeoutMs ?? 4 * this.#peerTimeoutMs,
    );
    this.#flapWindowMs = options.flapWindowMs ?? 30_000;
    this.#flapDecayMs = options.flapDecayMs ?? 60_000;
    this.#forgetAfterMs = options.forgetAfterMs ?? 600_000;
    this.#seeds = new Set(options.seeds ?? []);
    for (const seed of this.#seeds) this.addPeer(seed);
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

  /** Stops the rounds; the hellos in flight are no longer waited for. */
  async stop(): Promise<void> {
    this.#clock.clearInterval(this.#timer);
    this.#timer = undefined;
    const asking = [...this.#peers.values()].map((p) => p.asking);
    for (const peer of this.#peers.values()) peer.abandon?.();
    await Promise.all(asking);
  }

  /** Calls `listener` on every change of a peer's liveness; returns the unsubscriber. */
  onPeerChange(listener: PeerChangeListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Adds a server learned from outside (seeds, discovery, DNS): it is contacted in the next
   * hello round and becomes live once it answers. Known or own addresses are ignored; a
   * forgotten one is taken back.
   */
  addPeer(address: string): void {
    this.#forgotten.delete(address);
    this.#add(address);
  }

  /** Adds a peer named in gossip, unless it was forgotten (it must say hello itself). */
  #addGossiped(address: string): void {
    if (!this.#forgotten.has(address)) this.#add(address);
  }

  #add(address: string): void {
    if (address === this.#self || this.#peers.has(address)) return;
    this.#peers.set(address, {
      alive: false,
      lastOk: 0,
      suspect: false,
      refused: false,
      asking: undefined,
      abandon: undefined,
      timeoutMs: this.#peerTimeoutMs,
      downAt: undefined,
      calmSince: this.#clock.now(),
      notAliveSince: this.#clock.now(),
      seed: this.#seeds.has(address),
    });
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
   * for its peer timeout, but not worth waiting on.
   */
  isSuspect(address: string): boolean {
    return this.#peers.get(address)?.suspect === true;
  }

  /**
   * Whether the ring should route around `address` without calling it: it is suspect while some
   * other live peer is not. When every live peer is suspect at once, the likelier cause is this
   * server (its own lag, its own network): routing around all of them would leave it alone in
   * the ring, so they are called as usual (with their RPC timeouts) until declared dead.
   */
  shouldRouteAround(address: string): boolean {
    if (!this.isSuspect(address)) return false;
    for (const [other, peer] of this.#peers) {
      if (other !== address && peer.alive && !peer.suspect) return true;
    }
    return false;
  }

  /** The live peers currently suspect, sorted. */
  suspectServers(): string[] {
    return [...this.#peers].filter(([, p]) => p.alive && p.suspect).map(([a]) => a).sort();
  }

  /** A live peer's current peer timeout in ms (grown while it flaps); undefined if unknown. */
  peerTimeoutOf(address: string): number | undefined {
    return this.#peers.get(address)?.timeoutMs;
  }

  /**
   * A sign of life from a known peer: an authenticated request from it, or an authentic answer
   * to any request sent to it. It postpones declaring a live peer dead; it neither revives a dead
   * one nor clears a suspicion (only hellos do: a request proves only one direction, and an
   * answer may have been sent long ago).
   */
  heardFrom(address: string): void {
    const peer = this.#peers.get(address);
    if (!peer?.alive) return;
    peer.lastOk = Math.max(peer.lastOk, this.#clock.now());
    peer.refused = false; // a process answers there after all
  }

  /**
   * Answers a `hello` from another server: it is alive, and so are the peers it lists. A suspect
   * sender stays suspect until it answers one of this server's hellos.
   */
  receiveHello(hello: Extract<ClusterRequest, { type: "hello" }>): ClusterResponse {
    if (hello.from !== this.#self) {
      this.addPeer(hello.from);
      this.#markAlive(hello.from);
      this.#learnBrowserUrl(hello.from, hello.browserUrl);
      for (const p of hello.peers) this.#addGossiped(p);
    }
    return { v: 1, type: "hello", peers: this.liveServers(), ...this.#ownBrowserUrl() };
  }

  /** The `browserUrl` field of this server's hellos (absent when it is the address itself). */
  #ownBrowserUrl(): { browserUrl?: string } {
    return this.#browserUrl === this.#self ? {} : { browserUrl: this.#browserUrl };
  }

  /**
   * Credits this server's own lag, then sends a hello to every peer without one in flight,
   * declares dead every live peer without a sign of life past its peer timeout (a frozen peer's
   * hello may still be in flight then) and forgets peers not alive for too long.
   */
  #helloNow(): void {
    const now = this.#clock.now();
    if (this.#lastRound !== undefined) {
      const gap = now - this.#lastRound;
      if (gap > this.#peerTimeoutMs) {
        // This server was paused (SIGSTOP, a stalled event loop): the silence it sees is its
        // own. Each live peer gets a fresh peer timeout to answer this round's hello instead of
        // being declared dead for it (a thawed server used to drop every peer at once and
        // briefly form a ring of its own).
        this.#deps.log("paused", { ms: gap });
        for (const peer of this.#peers.values()) {
          if (peer.alive) peer.lastOk = Math.max(peer.lastOk, now);
        }
      } else if (gap - this.#helloIntervalMs > LAG_TOLERANCE_MS) {
        // A shorter lag: the time this server could not listen does not count as silence.
        const lag = gap - this.#helloIntervalMs;
        for (const peer of this.#peers.values()) {
          if (peer.alive) peer.lastOk = Math.min(now, peer.lastOk + lag);
        }
      }
    }
    this.#lastRound = now;
    for (const [address, peer] of [...this.#peers]) {
      this.#decay(peer, now);
      if (peer.alive && now - peer.lastOk > this.#timeoutOf(peer)) {
        this.#setAlive(address, false, { error: `silent for ${now - peer.lastOk} ms` });
      }
      if (
        !peer.alive && !peer.seed && now - peer.notAliveSince > this.#forgetAfterMs
      ) {
        this.#forget(address, now);
        continue;
      }
      if (peer.asking) continue;
      peer.asking = this.#hello(address, peer).finally(() => {
        peer.asking = undefined;
        peer.abandon = undefined;
      });
    }
  }

  /** The timeout that applies now: the base one once nothing listens at its address. */
  #timeoutOf(peer: PeerState): number {
    return peer.refused ? this.#peerTimeoutMs : peer.timeoutMs;
  }

  /** Halves a grown peer timeout after each calm `flapDecayMs`. */
  #decay(peer: PeerState, now: number): void {
    if (peer.timeoutMs > this.#peerTimeoutMs && now - peer.calmSince >= this.#flapDecayMs) {
      peer.timeoutMs = Math.max(this.#peerTimeoutMs, Math.round(peer.timeoutMs / 2));
      peer.calmSince = now;
    }
  }

  #forget(address: string, now: number): void {
    const peer = this.#peers.get(address);
    peer?.abandon?.();
    this.#peers.delete(address);
    this.#browserUrls.delete(address);
    this.#rejecting.delete(address);
    this.#forgotten.set(address, now);
    if (this.#forgotten.size > MAX_FORGOTTEN) {
      this.#forgotten.delete(this.#forgotten.keys().next().value!);
    }
    this.#deps.log("peer_forgotten", {
      peer: address,
      notAliveMs: peer ? now - peer.notAliveSince : undefined,
    });
  }

  #markAlive(address: string): void {
    const peer = this.#peers.get(address);
    if (!peer) return;
    peer.lastOk = this.#clock.now();
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
    const now = this.#clock.now();
    peer.alive = alive;
    if (!alive) {
      peer.downAt = now;
      peer.calmSince = now;
      peer.notAliveSince = now;
    } else if (peer.downAt !== undefined && now - peer.downAt <= this.#flapWindowMs) {
      // Declared dead, then heard again soon: it was busy, not gone. Give it longer next time.
      const grown = Math.min(this.#maxPeerTimeoutMs, peer.timeoutMs * 2);
      if (grown !== peer.timeoutMs) {
        peer.timeoutMs = grown;
        fields = { ...fields, flapping: true, timeoutMs: grown };
      }
      peer.calmSince = now;
    }
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

  /**
   * One hello to `address`. The peer is suspect once it is `helloTimeoutMs` late (a deadline
   * that fires late because this server lagged is checked again after pending answers are
   * read); the hello itself runs on for the peer's timeout, and an answer that comes after the
   * suspicion still counts. Resolves once answered, failed or given up.
   */
  #hello(address: string, peer: PeerState): Promise<void> {
    const clock = this.#clock;
    const sentAt = clock.now();
    const lifetimeMs = Math.max(this.#helloTimeoutMs, this.#timeoutOf(peer));
    const request: ClusterRequest = {
      v: 1,
      type: "hello",
      from: this.#self,
      peers: this.liveServers(),
      ...this.#ownBrowserUrl(),
    };
    let settled = false;
    const timers: { suspect?: TimerHandle; end?: TimerHandle } = {};
    let finish!: () => void;
    const done = new Promise<void>((resolve) => {
      finish = () => {
        if (settled) return;
        settled = true;
        clock.clearTimeout(timers.suspect);
        clock.clearTimeout(timers.end);
        resolve();
      };
    });
    peer.abandon = finish;
    const current = () => this.#peers.get(address) === peer;
    const fail = (err: unknown) => {
      if (settled) return;
      finish();
      if (!current()) return;
      this.#failed(address, peer, err);
    };
    let due = sentAt + this.#helloTimeoutMs;
    const checkLate = () => {
      if (settled || !current()) return;
      const now = clock.now();
      if (now - due > LAG_TOLERANCE_MS && now - sentAt < lifetimeMs) {
        // This server lagged: the answer may be waiting to be read. Look again shortly.
        due = now + LAG_RECHECK_MS;
        timers.suspect = clock.setTimeout(checkLate, LAG_RECHECK_MS);
        return;
      }
      this.#setSuspect(address, true);
    };
    timers.suspect = clock.setTimeout(checkLate, this.#helloTimeoutMs);
    timers.end = clock.setTimeout(
      () => fail(new Error(`no answer to hello within ${lifetimeMs} ms`)),
      lifetimeMs,
    );
    this.#deps.call(address, request, lifetimeMs).then((res) => {
      // Late answers count too (the peer was busy, not gone), unless it was forgotten meanwhile.
      if (!current()) return finish();
      if (res.type !== "hello") return fail(new Error(`${address} answered ${res.type}`));
      finish();
      this.#rejecting.delete(address);
      peer.refused = false;
      this.#markAlive(address);
      this.#setSuspect(address, false);
      this.#learnBrowserUrl(address, res.browserUrl);
      for (const p of res.peers) this.#addGossiped(p);
    }, fail).catch((err) => this.#deps.log("hello_failed", { peer: address, error: String(err) }));
    return done;
  }

  /** A hello failed (refused, rejected, or unanswered for its whole lifetime). */
  #failed(address: string, peer: PeerState, err: unknown): void {
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
    peer.refused = err instanceof PeerUnreachableError && err.failure === "unreachable";
    this.#setSuspect(address, true);
    if (peer.alive && this.#clock.now() - peer.lastOk > this.#timeoutOf(peer)) {
      this.#setAlive(address, false, { error: String(err) });
    }
  }
}
