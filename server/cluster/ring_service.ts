/**
 * Runs this server's CHORD ring node between real processes: joins at start, drives the
 * maintenance rounds (stabilize, check-predecessor, fix-fingers) on a timer, re-joins when cut
 * off, leaves gracefully on shutdown, and exposes the node's state for `/ring` and `/metrics`.
 * Which servers exist comes from the cluster membership (seed list + gossip; discovery later).
 */
import {
  ChordNode,
  type ChordNodeState,
  IdSpace,
  systemClock,
  systemRandom,
} from "../chord/mod.ts";
import type { Metrics } from "../api/metrics.ts";
import type { Hmac } from "./hmac.ts";
import type { Log } from "./cluster.ts";
import { HttpChordTransport } from "./chord_transport.ts";

/** Collaborators of a {@link RingService}. */
export interface RingServiceDeps {
  hmac: Hmac;
  metrics: Metrics;
  log: Log;
  /** Servers this one currently knows to be alive (itself included). */
  liveServers(): string[];
  /** Every server this one knows of, alive or not (itself included). */
  knownServers(): string[];
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
  /** Timeout of one ring RPC attempt, in ms. @default 1500 */
  rpcTimeoutMs?: number;
  /**
   * How long a server that knows of other servers waits for one of them to answer before it
   * creates a ring of its own, in ms. @default 3000
   */
  createGraceMs?: number;
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

/** One server's ring node and its maintenance loop. */
export class RingService {
  readonly node: ChordNode;
  readonly transport: HttpChordTransport;
  #deps: RingServiceDeps;
  #space: IdSpace;
  #intervalMs: number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running = false;
  #round: Promise<void> | undefined;
  #createGraceMs: number;
  #startedAt = 0;

  /** Creates the node (not yet a member); {@link start} joins or creates the ring. */
  constructor(deps: RingServiceDeps, options: RingServiceOptions) {
    this.#deps = deps;
    this.#space = new IdSpace(options.bits ?? 160);
    this.#intervalMs = options.stabilizeIntervalMs ?? 500;
    this.#createGraceMs = options.createGraceMs ?? 3000;
    this.transport = new HttpChordTransport(
      { hmac: deps.hmac, space: this.#space, counters: deps.metrics, log: deps.log },
      { self: options.self, timeoutMs: options.rpcTimeoutMs ?? 1500 },
    );
    this.node = new ChordNode(
      { transport: this.transport, clock: systemClock, random: systemRandom },
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
  }

  /** Starts the maintenance loop; the first round joins (or creates) the ring. */
  start(): void {
    this.#running = true;
    this.#startedAt = Date.now();
    this.#schedule(0);
  }

  /** Stops the loop and leaves the ring gracefully (successor and predecessor are told). */
  async stop(): Promise<void> {
    this.#running = false;
    clearTimeout(this.#timer);
    await this.#round;
    if (this.node.isMember) {
      await this.node.leave().catch((err) =>
        this.#deps.log("ring_leave_failed", { error: String(err) })
      );
    }
    this.transport.close();
  }

  /** Serves `POST /ring/rpc`. */
  handleHttp(req: Request): Promise<Response> {
    return this.transport.handleHttp(req);
  }

  /** This node's state as JSON for `/ring` (and the visualizer). */
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
    this.#timer = setTimeout(() => {
      this.#round = this.#maintain().finally(() => {
        this.#round = undefined;
        this.#schedule(this.#intervalMs);
      });
    }, delayMs);
  }

  /** One maintenance round; errors are logged and counted, never thrown (house style). */
  async #maintain(): Promise<void> {
    try {
      if (!this.node.isMember || this.#isAloneWhileOthersLive()) await this.#joinOrCreate();
      if (!this.node.isMember) return;
      await this.node.stabilize();
      await this.node.checkPredecessor();
      await this.node.fixFingers();
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
   * Joins through a live server. To avoid several servers each creating their own ring when they
   * start together, only the server with the smallest address among the live ones may create.
   */
  async #joinOrCreate(): Promise<void> {
    const self = this.transport.localAddress;
    const others = this.#deps.liveServers().filter((s) => s !== self).sort();
    // A one-node ring that found others gives itself up and joins theirs (it holds no keys yet).
    if (this.node.isMember) await this.node.leave();
    for (const known of others) {
      try {
        await this.node.join(known);
        this.#deps.log("ring_joined", { through: known, id: this.#space.toHex(this.node.self.id) });
        return;
      } catch (err) {
        this.#deps.log("ring_join_failed", { through: known, error: String(err) });
      }
    }
    const knowsOthers = this.#deps.knownServers().some((s) => s !== self);
    const graceOver = Date.now() - this.#startedAt >= this.#createGraceMs;
    if (!this.node.isMember && others.every((s) => s > self) && (!knowsOthers || graceOver)) {
      this.node.create();
      this.#deps.log("ring_created", { id: this.#space.toHex(this.node.self.id) });
    }
  }
}
