/**
 * Runs this server's CHORD ring node: joins or creates the ring at start (only the smallest live
 * server may create one), drives the maintenance rounds (stabilize, check-predecessor,
 * fix-fingers) on a timer, re-joins when cut off, merges its ring into the ring of the smallest
 * live server after a partition heals, leaves gracefully on shutdown, and exposes the node's state
 * for `/ring` and `/metrics`. Which servers exist comes in through two plain functions (the
 * cluster membership: seeds, hellos and discovery); the ring transport and the clock with its
 * timers are injected, defaulting to signed HTTP and real time, so ring forming and merging also
 * run on the simulated network and virtual time.
 */
import {
  CHORD_PROTOCOL_VERSION,
  type ChordId,
  ChordNode,
  type ChordNodeState,
  type Clock,
  decodeNodeRef,
  IdSpace,
  type NodeRef,
  type Random,
  sameNode,
  systemClock,
  systemRandom,
  type TimerId,
  type Timers,
  type Transport,
} from "../chord/mod.ts";
import type { ClusterKey } from "./cluster_key.ts";
import type { Log, Metrics } from "../telemetry/mod.ts";
import { HttpChordTransport } from "./chord_transport.ts";

/**
 * Collaborators of a {@link RingService}. The ring transport is either injected (`transport`,
 * e.g. a `SimNetwork` endpoint in tests) or built as signed HTTP from `key`.
 */
export type RingServiceDeps =
  & RingServiceCommonDeps
  & (
    | {
      /** Signs ring RPC: the service builds its {@link HttpChordTransport} with it. */
      key: ClusterKey;
      /** Not given: ring RPC goes over signed HTTP. */
      transport?: undefined;
    }
    | {
      /** Carries ring RPC; its `localAddress` must be `options.self`. */
      transport: Transport;
      /** Unused when `transport` is given. */
      key?: ClusterKey;
    }
  );

/** Collaborators of a {@link RingService} whatever carries its ring RPC. */
export interface RingServiceCommonDeps {
  /** Counters and gauges for `/metrics`. */
  metrics: Metrics;
  /** Structured log of ring events (joins, merges, failures). */
  log: Log;
  /** Servers this one currently knows to be alive (itself included). */
  liveServers(): string[];
  /** Every server this one knows of, alive or not (itself included). */
  knownServers(): string[];
  /**
   * Whether to route around a peer that missed its last hello (`Membership.shouldRouteAround`):
   * ring RPC to it fails at once, so the ring routes around a frozen server as soon as it is
   * suspected. @default never
   */
  isSuspect?(address: string): boolean;
  /** Time and timers of the maintenance loop and the create grace. @default systemClock */
  clock?: Clock & Timers;
  /** Random source of the ring node. @default systemRandom */
  random?: Random;
}

/** Configuration of a {@link RingService}. */
export interface RingServiceOptions {
  /** This server's base URL (its ring address; the node id is SHA-1 of it). */
  self: string;
  /** Identifier bits. @default 160 */
  bits?: number;
  /** Successor list length r. @default 8 */
  successorListLength?: number;
  /** Period of the maintenance round, in ms. @default 500 */
  stabilizeIntervalMs?: number;
  /** Timeout of one ring RPC attempt of the HTTP transport (not an injected one), in ms. @default 1500 */
  rpcTimeoutMs?: number;
  /**
   * How long a server that knows of other servers waits for one of them to answer before it
   * creates a ring of its own, in ms. @default 3000
   */
  createGraceMs?: number;
  /**
   * Every this many maintenance rounds, a member checks that it is in the ring of the smallest
   * live server (see {@link RingService} "Ring merging"). @default 2
   */
  mergeCheckEveryRounds?: number;
}

/** The JSON served at `/ring`. */
export interface RingView {
  self: { id: string; address: string };
  isMember: boolean;
  predecessor: { id: string; address: string } | null;
  successors: { id: string; address: string }[];
  fingers: ({ id: string; address: string } | null)[];
  stats: ChordNode["stats"];
}

/** How many consecutive checks must find this node outside S's ring before it moves. */
const MERGE_CONFIRMATIONS = 2;
/** Rounds after this node joined or created a ring during which it does not check. */
const MERGE_COOLDOWN_ROUNDS = 6;
/** Bound on the hops of the lookup a merge check runs. */
const MERGE_LOOKUP_MAX_HOPS = 32;

/** What one merge check concluded. */
type MergeCheck =
  /** S's ring says this node owns its own id, or names its successor (a ring still linking). */
  | { kind: "same_ring" }
  /** The check could not decide (S or a hop unreachable, S not a member, a hop was us…). */
  | { kind: "inconclusive"; why: string }
  /** S's ring gives this node's id to `owner`, a live node that is neither us nor our successor. */
  | { kind: "other_ring"; owner: NodeRef };

/**
 * One server's ring node and its maintenance loop.
 *
 * ## Ring merging
 *
 * A partition that outlasts failure detection leaves one CHORD ring per side: each side drops the
 * other's nodes from its successor lists, fingers and predecessors, and nothing in CHORD (nor in
 * Zave's corrected protocol) ever links the two again once the network heals, even though the
 * cluster membership (hellos, discovery) sees every server alive again. Shafaat, Ghodsi and
 * Haridi ("Dealing with Network Partitions in Structured Overlay Networks", 2009) call the
 * repair *ring unification*: detect that a node known from outside the overlay (they keep the
 * nodes once suspected dead) is alive but not in one's ring, then merge. We detect with the
 * cluster membership and merge in the simplest way, one node at a time, by leave and re-join:
 *
 * - Every {@link RingServiceOptions.mergeCheckEveryRounds} rounds a member takes S, the smallest
 *   address among the servers the cluster membership says are alive. If S is itself, it does
 *   nothing. Otherwise it runs an iterative lookup of its OWN id starting at S. In one correct
 *   ring the answer is the node itself.
 * - If the answer is another node that answers a ping, is alive per membership, and is not this
 *   node's own first successor (which is what a node that has just joined S's ring, and whose
 *   predecessor does not link to it yet, would see), the check is suspicious. After
 *   {@link MERGE_CONFIRMATIONS} consecutive suspicious checks the node leaves its ring gracefully
 *   (its neighbours there close the gap) and joins through S. The move is logged (`ring_merge`)
 *   and counted (`p2pchat_ring_merges_total`).
 *
 * Why it converges to one ring: once membership agrees, every server picks the same S, and only
 * nodes outside S's ring ever move, always into S's ring. S's ring is the only stable one: its
 * members' checks succeed (they are in it) so it never loses a node, while every other ring loses
 * its nodes one by one until each has joined S's ring. The join itself is ordinary CHORD join and
 * stabilize (Zave's rules), so the grown ring converges as after any join. Why it cannot flap:
 * a member of S's ring is never told to move once that ring is correct; while it is still
 * linking, the answer is this node or its successor (not acted on), a cool-down follows every
 * join, and a decision needs two consecutive checks. Why a partial partition cannot cause
 * repeated moves: a node acts only when S is alive per its own membership AND answers the lookup;
 * a node that cannot reach S learns nothing (inconclusive) and stays where it is, and a node that
 * can reach S joins S's ring, where its later checks succeed.
 */
export class RingService {
  /** This server's ring node. */
  readonly node: ChordNode;
  /** The transport carrying this node's ring RPC. */
  readonly transport: Transport;
  #deps: RingServiceDeps;
  #http: HttpChordTransport | undefined;
  #clock: Clock & Timers;
  #space: IdSpace;
  #intervalMs: number;
  #timer: TimerId | undefined;
  #running = false;
  #round: Promise<void> | undefined;
  #createGraceMs: number;
  #startedAt = 0;
  #mergeEvery: number;
  #rounds = 0;
  /** Round of the last join or create: merge checks wait for the ring to link this node in. */
  #joinedAtRound = Number.NEGATIVE_INFINITY;
  #suspicions = 0;

  /** Creates the node (not yet a member); {@link start} joins or creates the ring. */
  constructor(deps: RingServiceDeps, options: RingServiceOptions) {
    this.#deps = deps;
    this.#space = new IdSpace(options.bits ?? 160);
    this.#intervalMs = options.stabilizeIntervalMs ?? 500;
    this.#createGraceMs = options.createGraceMs ?? 3000;
    this.#mergeEvery = options.mergeCheckEveryRounds ?? 2;
    this.#clock = deps.clock ?? systemClock;
    if (deps.transport === undefined) {
      this.#http = new HttpChordTransport(
        {
          key: deps.key,
          space: this.#space,
          counters: deps.metrics,
          log: deps.log,
          isSuspect: deps.isSuspect && ((address) => deps.isSuspect!(address)),
        },
        { self: options.self, timeoutMs: options.rpcTimeoutMs ?? 1500 },
      );
      this.transport = this.#http;
    } else if (deps.transport.localAddress !== options.self) {
      throw new RangeError(
        `Cannot create the ring service for ${options.self}: its transport is bound to ${deps.transport.localAddress}`,
      );
    } else {
      this.transport = deps.transport;
    }
    this.node = new ChordNode(
      { transport: this.transport, clock: this.#clock, random: deps.random ?? systemRandom },
      {
        bits: this.#space.bits,
        successorListLength: options.successorListLength ?? 8,
        // The HTTP transport already retries once; more attempts would only delay declaring
        // a dead node dead.
        rpcAttempts: 1,
      },
    );
    const m = deps.metrics;
    m.describe("p2pchat_ring_lookups_total", "counter", "Ring lookups started by this node");
    m.describe("p2pchat_ring_lookup_hops_total", "counter", "Hops of those lookups");
    m.describe("p2pchat_ring_lookup_failures_total", "counter", "Ring lookups that failed");
    m.describe("p2pchat_ring_stabilize_rounds_total", "counter", "Stabilize rounds run");
    m.describe("p2pchat_ring_rpc_failures_total", "counter", "Ring RPCs that failed, by reason");
    m.describe("p2pchat_ring_member", "gauge", "1 when this node is a ring member");
    m.describe(
      "p2pchat_ring_merges_total",
      "counter",
      "Times this node left its ring to join the ring of the smallest live server",
    );
  }

  /** Starts the maintenance loop; the first round joins (or creates) the ring. */
  start(): void {
    this.#running = true;
    this.#startedAt = this.#clock.now();
    this.#schedule(0);
  }

  /** Stops the loop and leaves the ring gracefully (successor and predecessor are told). */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#timer !== undefined) this.#clock.clearTimer(this.#timer);
    await this.#round;
    if (this.node.isMember) {
      await this.node.leave().catch((err) =>
        this.#deps.log("ring_leave_failed", { error: String(err) })
      );
    }
    this.transport.close();
  }

  /** Serves `POST /ring/rpc` (404 when ring RPC goes over an injected transport instead). */
  handleHttp(req: Request): Promise<Response> {
    if (this.#http === undefined) {
      return Promise.resolve(
        Response.json({ error: "Ring RPC is not served over HTTP here" }, { status: 404 }),
      );
    }
    return this.#http.handleHttp(req);
  }

  /** This node's state as JSON for `/ring`. */
  view(): RingView {
    const s: ChordNodeState = this.node.state();
    const ref = (n: { id: bigint; address: string }) => ({
      id: this.#space.toHex(n.id),
      address: n.address,
    });
    return {
      self: ref(s.self),
      isMember: s.isMember,
      predecessor: s.predecessor ? ref(s.predecessor) : null,
      successors: s.successorList.map(ref),
      fingers: s.fingers.map((f) => (f ? ref(f) : null)),
      stats: { ...this.node.stats },
    };
  }

  /** Copies the node's counters into the metrics registry (called before rendering). */
  exportMetrics(): void {
    const { metrics } = this.#deps;
    const st = this.node.stats;
    metrics.set("p2pchat_ring_lookups_total", st.lookups);
    metrics.set("p2pchat_ring_lookup_hops_total", st.lookupHops);
    metrics.set("p2pchat_ring_lookup_failures_total", st.lookupFailures);
    metrics.set("p2pchat_ring_stabilize_rounds_total", st.stabilizeRounds);
    metrics.set("p2pchat_ring_member", this.node.isMember ? 1 : 0);
  }

  #schedule(delayMs: number): void {
    if (!this.#running) return;
    this.#timer = this.#clock.setTimer(() => {
      this.#round = this.#maintain().finally(() => {
        this.#round = undefined;
        this.#schedule(this.#intervalMs);
      });
    }, delayMs);
  }

  /** One maintenance round; errors are logged and counted, never thrown (house style). */
  async #maintain(): Promise<void> {
    this.#rounds++;
    try {
      const giveUp = this.node.isMember && this.#isAloneWhileOthersLive() &&
        await this.#smallerRingAnswers();
      if (!this.node.isMember || giveUp) await this.#joinOrCreate();
      if (!this.node.isMember) return;
      await this.node.stabilize();
      await this.node.checkPredecessor();
      await this.node.fixFingers();
      if (
        this.node.isMember && this.#rounds % this.#mergeEvery === 0 &&
        this.#rounds - this.#joinedAtRound >= MERGE_COOLDOWN_ROUNDS
      ) {
        await this.#mergeIfOutsideSmallestRing();
      }
    } catch (err) {
      this.#deps.metrics.inc("p2pchat_ring_maintenance_errors_total");
      this.#deps.log("ring_maintenance_failed", { error: String(err) });
    }
  }

  /** A one-node ring while other servers are alive: it formed before they were reachable. */
  #isAloneWhileOthersLive(): boolean {
    const others = this.#deps.liveServers().filter((s) => s !== this.transport.localAddress);
    const successors = this.node.successorList;
    const pred = this.node.predecessor;
    const isAlone = successors.length > 0 &&
      successors.every((n) => n.address === this.transport.localAddress) &&
      (pred === undefined || pred.address === this.transport.localAddress);
    // Only non-smallest nodes give up their singleton ring, so exactly one ring survives.
    return isAlone && others.some((s) => s < this.transport.localAddress);
  }

  /**
   * Whether a live server smaller than this one answers lookups, i.e. is in a ring this node can
   * join. A one-node ring is given up only then: leaving it for a server that has no ring yet
   * would leave the records this node holds unreachable until that server creates one.
   */
  async #smallerRingAnswers(): Promise<boolean> {
    const self = this.transport.localAddress;
    for (const s of this.#deps.liveServers().filter((s) => s < self).sort()) {
      if (typeof (await this.#lookupAt(s, this.node.self.id)) !== "string") return true;
    }
    return false;
  }

  /**
   * Joins through a live server. To avoid several servers each creating their own ring when they
   * start together, only the server with the smallest address among the live ones may create.
   */
  async #joinOrCreate(): Promise<void> {
    const self = this.transport.localAddress;
    const others = this.#deps.liveServers().filter((s) => s !== self).sort();
    // A one-node ring that found a smaller server's ring gives itself up and joins it; what it
    // holds moves to the new replica sets by the replication's hand-off.
    if (this.node.isMember) await this.node.leave();
    for (const known of others) {
      try {
        await this.node.join(known);
        this.#joinedAtRound = this.#rounds;
        this.#deps.log("ring_joined", { through: known, id: this.#space.toHex(this.node.self.id) });
        return;
      } catch (err) {
        this.#deps.log("ring_join_failed", { through: known, error: String(err) });
      }
    }
    const knowsOthers = this.#deps.knownServers().some((s) => s !== self);
    const graceOver = this.#clock.now() - this.#startedAt >= this.#createGraceMs;
    if (!this.node.isMember && others.every((s) => s > self) && (!knowsOthers || graceOver)) {
      this.node.create();
      this.#joinedAtRound = this.#rounds;
      this.#deps.log("ring_created", { id: this.#space.toHex(this.node.self.id) });
    }
  }

  /**
   * Ring merging (see the class comment): if this node is, twice in a row, outside the ring of
   * S (the smallest live server), it leaves its ring and joins through S.
   */
  async #mergeIfOutsideSmallestRing(): Promise<void> {
    const self = this.transport.localAddress;
    const smallest = [...this.#deps.liveServers()].sort()[0];
    if (smallest === undefined || smallest === self) {
      this.#suspicions = 0;
      return;
    }
    const check = await this.#checkRingOf(smallest);
    if (check.kind !== "other_ring") {
      this.#suspicions = 0;
      return;
    }
    this.#suspicions++;
    this.#deps.log("ring_merge_suspected", {
      smallest,
      owner: check.owner.address,
      confirmations: this.#suspicions,
    });
    if (this.#suspicions < MERGE_CONFIRMATIONS) return;
    this.#suspicions = 0;
    // Only act while S is still alive per membership (it may have died during the checks).
    if (!this.#deps.liveServers().includes(smallest)) return;
    const before = this.node.successorList.map((n) => n.address);
    await this.node.leave();
    this.#deps.metrics.inc("p2pchat_ring_merges_total");
    this.#deps.log("ring_merge", { through: smallest, owner: check.owner.address, left: before });
    try {
      await this.node.join(smallest);
      this.#joinedAtRound = this.#rounds;
      this.#deps.log("ring_joined", {
        through: smallest,
        id: this.#space.toHex(this.node.self.id),
      });
    } catch (err) {
      // Not a member now: the next round joins through the live servers, smallest first.
      this.#deps.log("ring_join_failed", { through: smallest, error: String(err) });
    }
  }

  /** Looks up this node's own id in the ring S belongs to, and says what that means. */
  async #checkRingOf(smallest: string): Promise<MergeCheck> {
    const self = this.node.self;
    const owner = await this.#lookupAt(smallest, self.id);
    if (typeof owner === "string") return { kind: "inconclusive", why: owner };
    if (sameNode(owner, self) || sameNode(owner, this.node.successorList[0])) {
      return { kind: "same_ring" };
    }
    if (owner.address === self.address) return { kind: "inconclusive", why: "own address" };
    if (!this.#deps.liveServers().includes(owner.address)) {
      return { kind: "inconclusive", why: `owner ${owner.address} not live per membership` };
    }
    try {
      const pong = await this.transport.call(owner.address, {
        v: CHORD_PROTOCOL_VERSION,
        type: "ping",
      });
      if (pong.type !== "pong" || !sameNode(decodeNodeRef(this.#space, pong.node), owner)) {
        return { kind: "inconclusive", why: `owner ${owner.address} answered as another node` };
      }
    } catch (err) {
      return { kind: "inconclusive", why: `owner ${owner.address}: ${String(err)}` };
    }
    return { kind: "other_ring", owner };
  }

  /**
   * Iterative lookup of `key` starting at `start`, over the transport only: unlike
   * {@link ChordNode.lookup} it neither reads nor changes this node's ring state, so it sees the
   * ring `start` is in. Resolves with the owner, or with why it could not tell. Bounded: at most
   * {@link MERGE_LOOKUP_MAX_HOPS} requests, each candidate asked at most once.
   */
  async #lookupAt(start: string, key: ChordId): Promise<NodeRef | string> {
    const self = this.transport.localAddress;
    const asked = new Set<string>();
    let candidates: string[] = [start];
    for (let hops = 0; hops < MERGE_LOOKUP_MAX_HOPS;) {
      let next: string[] | undefined;
      for (const address of candidates) {
        // Reaching ourselves means S's ring routes through this node: not a separate ring.
        if (address === self) return "the lookup reached this node";
        if (asked.has(address)) continue;
        asked.add(address);
        hops++;
        try {
          const answer = await this.transport.call(address, {
            v: CHORD_PROTOCOL_VERSION,
            type: "find_successor",
            key: this.#space.toHex(key),
          });
          if (answer.type === "successor_found") return decodeNodeRef(this.#space, answer.owner);
          if (answer.type === "closer_nodes") {
            next = answer.nodes.map((n) => n.address);
            break;
          }
          // An error (e.g. not a member yet): try the next candidate.
        } catch {
          // Unreachable or timed out: try the next candidate.
        }
        if (hops >= MERGE_LOOKUP_MAX_HOPS) break;
      }
      if (next === undefined) return `no candidate answered (${candidates.join(", ")})`;
      candidates = next;
    }
    return `no owner within ${MERGE_LOOKUP_MAX_HOPS} hops`;
  }
}
