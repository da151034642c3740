/**
 * One ring node: its state (predecessor, successor list, fingers) and the maintenance operations
 * of Pamela Zave's corrected CHORD ("Reasoning about Identifier Spaces: How to Make Chord
 * Correct", IEEE TSE 2017). The node owns no timers: whoever runs it (the simulation or the
 * server) calls {@link ChordNode.stabilize}, {@link ChordNode.checkPredecessor} and
 * {@link ChordNode.fixFingers} once per round.
 *
 * Rules followed throughout (Zave 2017):
 * - A pointer (successor, predecessor) is adopted only after contacting that node.
 * - On notify (rectify), the predecessor changes only if it is unknown, dead, or the notifier lies
 *   between it and us.
 * - The successor list is rebuilt from a contacted successor's list; dead entries are dropped as
 *   they are found, and the next entry takes over.
 */

import type { Clock } from "./clock.ts";
import {
  ChordJoinError,
  ChordProtocolError,
  ChordTransportError,
  NoLiveSuccessorError,
  NotAMemberError,
} from "./errors.ts";
import { FingerTable } from "./fingers.ts";
import { between, type ChordId, IdSpace } from "./id.ts";
import {
  iterativeLookup,
  type LookupContext,
  type LookupResult,
  type LookupStep,
} from "./lookup.ts";
import {
  CHORD_PROTOCOL_VERSION,
  type ChordRequest,
  type ChordResponse,
  type ResponseTypeFor,
} from "./messages.ts";
import {
  decodeNodeRef,
  encodeNodeRef,
  formatNodeRef,
  type NodeAddress,
  type NodeRef,
  type NodeRefWire,
  sameNode,
} from "./node_ref.ts";
import type { Random } from "./random.ts";
import { buildSuccessorList, withoutNode } from "./successors.ts";
import type { Transport } from "./transport.ts";

/** Collaborators injected into a {@link ChordNode}. */
export interface ChordNodeDeps {
  /** Carries RPCs to other nodes; the node installs its handler on it. */
  readonly transport: Transport;
  /** Time source (virtual in simulation). */
  readonly clock: Clock;
  /** Random source (seeded in simulation). */
  readonly random: Random;
}

/** Configuration of a {@link ChordNode}. */
export interface ChordNodeOptions {
  /**
   * Id width `m` in bits.
   * @default {160}
   */
  readonly bits?: number;
  /**
   * This node's id.
   * @default {the id of the transport's local address (SHA-1, truncated to `bits`)}
   */
  readonly id?: ChordId;
  /**
   * Successor list length `r`: the ring survives `r - 1` consecutive simultaneous failures.
   * @default {8}
   */
  readonly successorListLength?: number;
  /**
   * How many fingers {@link ChordNode.fixFingers} refreshes by lookup per call (fingers that are
   * just the successor are refreshed for free and not counted).
   * @default {4}
   */
  readonly fingersPerRound?: number;
  /**
   * How many alternative next hops a lookup step returns, so a lookup can route around a dead hop.
   * @default {3}
   */
  readonly lookupCandidates?: number;
  /**
   * How many times one {@link ChordNode.stabilize} may move the successor closer by following
   * predecessor pointers back (each after contacting the node), so a node whose successor is far
   * off catches up in one round instead of one node per round.
   * @default {16}
   */
  readonly stabilizeWalkLimit?: number;
  /**
   * How many times an RPC is sent before its peer is treated as dead, when the transport reports
   * a timeout or an unreachable peer (a lost message must not evict a live successor).
   * @default {2}
   */
  readonly rpcAttempts?: number;
  /**
   * A lookup gives up after this many hops.
   * @default {64}
   */
  readonly maxLookupHops?: number;
}

/** Counters for `/metrics`. */
export interface ChordNodeStats {
  /** Lookups started by this node (including those of fixFingers and join). */
  lookups: number;
  /** Total hops of those lookups. */
  lookupHops: number;
  /** Lookups that failed. */
  lookupFailures: number;
  /** Calls to {@link ChordNode.stabilize}. */
  stabilizeRounds: number;
  /** RPCs this node sent that failed (dead, unreachable, timed out or bad answer). */
  rpcFailures: number;
  /** Requests this node served. */
  requestsServed: number;
}

/** A snapshot of a node's ring state, for the invariant checker and `/ring`. */
export interface ChordNodeState {
  /** The node itself. */
  readonly self: NodeRef;
  /** Whether the node is currently a ring member (has joined and not left or been cut off). */
  readonly isMember: boolean;
  /** The predecessor, when known. */
  readonly predecessor: NodeRef | undefined;
  /** The successor list, nearest first (empty when not a member). */
  readonly successorList: readonly NodeRef[];
  /** Finger slots `0..m-1`. */
  readonly fingers: readonly (NodeRef | undefined)[];
}

type Expected<T extends ChordRequest["type"]> = Extract<
  ChordResponse,
  { type: ResponseTypeFor[T] }
>;

const EXPECTED: { readonly [T in ChordRequest["type"]]: readonly ResponseTypeFor[T][] } = {
  ping: ["pong"],
  get_predecessor: ["predecessor"],
  get_successor_list: ["successor_list"],
  notify: ["ack"],
  find_successor: ["successor_found", "closer_nodes"],
  predecessor_leaving: ["ack"],
  successor_leaving: ["ack"],
};

const v = CHORD_PROTOCOL_VERSION;

/**
 * A CHORD ring node.
 *
 * @example
 * ```ts
 * const node = new ChordNode({ transport, clock, random }, { successorListLength: 8 });
 * await node.join("https://10.0.0.2:8443"); // or node.create() for the first node
 * // every round:
 * await node.stabilize();
 * await node.checkPredecessor();
 * await node.fixFingers();
 * const { owner, hops } = await node.lookup(node.space.idFromKey("user:alice"));
 * ```
 */
export class ChordNode {
  /** The id space. */
  readonly space: IdSpace;
  /** This node. */
  readonly self: NodeRef;
  /** Counters for `/metrics`. */
  readonly stats: ChordNodeStats = {
    lookups: 0,
    lookupHops: 0,
    lookupFailures: 0,
    stabilizeRounds: 0,
    rpcFailures: 0,
    requestsServed: 0,
  };

  readonly #transport: Transport;
  readonly #clock: Clock;
  readonly #random: Random;
  readonly #r: number;
  readonly #fingersPerRound: number;
  readonly #lookupCandidates: number;
  readonly #maxLookupHops: number;
  readonly #walkLimit: number;
  readonly #rpcAttempts: number;
  readonly #fingers: FingerTable;
  readonly #lookupContext: LookupContext;
  #isMember = false;
  #successors: NodeRef[] = [];
  #predecessor: NodeRef | undefined;
  #nextFinger: number;
  #lastStabilizedAt: number | undefined;

  /** Creates a node that is not yet a member; call {@link create} or {@link join}. */
  constructor(deps: ChordNodeDeps, options: ChordNodeOptions = {}) {
    this.space = new IdSpace(options.bits ?? 160);
    this.#transport = deps.transport;
    this.#clock = deps.clock;
    this.#random = deps.random;
    const address = deps.transport.localAddress;
    const id = options.id ?? this.space.idFromKey(address);
    if (!this.space.contains(id)) {
      throw new RangeError(
        `Cannot create node ${address}: id is outside the ${this.space.bits}-bit space`,
      );
    }
    this.self = { id, address };
    this.#r = positiveInteger(options.successorListLength ?? 8, "successorListLength");
    this.#fingersPerRound = positiveInteger(options.fingersPerRound ?? 4, "fingersPerRound");
    this.#lookupCandidates = positiveInteger(options.lookupCandidates ?? 3, "lookupCandidates");
    this.#maxLookupHops = positiveInteger(options.maxLookupHops ?? 64, "maxLookupHops");
    this.#walkLimit = positiveInteger(options.stabilizeWalkLimit ?? 16, "stabilizeWalkLimit");
    this.#rpcAttempts = positiveInteger(options.rpcAttempts ?? 2, "rpcAttempts");
    this.#fingers = new FingerTable(this.space, this.self);
    this.#nextFinger = Math.floor(this.#random.next() * this.space.bits);
    this.#lookupContext = {
      space: this.space,
      self: this.self,
      maxHops: this.#maxLookupHops,
      localStep: (key) => this.#lookupStep(key),
      askRemote: (node, key) => this.#askRemote(node, key),
      forget: (node) => this.#forget(node.address),
    };
    deps.transport.listen((request, from) => this.#handle(request, from));
  }

  /** Whether this node is a ring member (created or joined, and not left or cut off). */
  get isMember(): boolean {
    return this.#isMember;
  }

  /** The predecessor, when known. */
  get predecessor(): NodeRef | undefined {
    return this.#predecessor;
  }

  /** The successor list, nearest first. */
  get successorList(): readonly NodeRef[] {
    return this.#successors;
  }

  /**
   * The first successor. Throws {@link NotAMemberError} when not a member and
   * {@link NoLiveSuccessorError} when every successor has been found dead since the last
   * stabilize (which then repairs the list or gives up).
   */
  get successor(): NodeRef {
    this.#requireMember("read the successor");
    const successor = this.#successors[0];
    if (successor === undefined) throw new NoLiveSuccessorError(this.self.address);
    return successor;
  }

  /** Virtual or real time of the last completed stabilize, if any. */
  get lastStabilizedAt(): number | undefined {
    return this.#lastStabilizedAt;
  }

  /** A snapshot of this node's ring state. */
  state(): ChordNodeState {
    return {
      self: this.self,
      isMember: this.isMember,
      predecessor: this.#predecessor,
      successorList: [...this.#successors],
      fingers: this.#fingers.entries(),
    };
  }

  /** Whether this node is responsible for `key`: it lies in `(predecessor, self]`. */
  isResponsibleFor(key: ChordId): boolean {
    if (!this.isMember) return false;
    const pred = this.#predecessor;
    if (pred === undefined) return sameNode(this.#successors[0], this.self);
    return between(pred.id, key, this.self.id, "(]");
  }

  /** Starts a new ring with this node as its only member. */
  create(): void {
    this.#isMember = true;
    this.#successors = [this.self];
    this.#predecessor = undefined;
    this.#fingers.clear();
  }

  /**
   * Joins the ring through any member reachable at `known` (Zave 2017, join): looks up this
   * node's own id to find its successor, contacts that successor, and adopts it with its
   * successor list. The predecessor stays unknown until someone notifies us; the ring links this
   * node in over the next stabilize rounds.
   *
   * Throws {@link ChordJoinError} when `known` cannot be reached, the lookup fails, or the id is
   * already taken.
   */
  async join(known: NodeAddress): Promise<void> {
    if (this.isMember) {
      throw new ChordJoinError(`Cannot join: ${this.self.address} is already a member`);
    }
    let result: LookupResult;
    try {
      const first = await this.#askRemote({ id: this.self.id, address: known }, this.self.id);
      result = await iterativeLookup(this.#lookupContext, this.self.id, first, 1, undefined);
    } catch (error) {
      throw new ChordJoinError(`Cannot join through ${known}: lookup of own id failed`, {
        cause: error,
      });
    }
    // The owner may have just died; its successors (as the answering node knew them) follow it
    // on the ring, so the first of them that answers is our successor.
    let contacted: { node: NodeRef; successors: NodeRef[] } | undefined;
    let lastError: unknown;
    for (const candidate of [result.owner, ...result.alternatives]) {
      if (candidate.id === this.self.id) {
        throw new ChordJoinError(
          `Cannot join through ${known}: id ${
            this.space.toHex(this.self.id)
          } is already used by ${candidate.address}`,
        );
      }
      try {
        contacted = await this.#contact(candidate);
        break;
      } catch (error) {
        lastError = error;
      }
    }
    if (contacted === undefined) {
      throw new ChordJoinError(
        `Cannot join through ${known}: successor ${result.owner.address} did not answer`,
        { cause: lastError },
      );
    }
    this.#predecessor = undefined;
    this.#fingers.clear();
    this.#successors = buildSuccessorList(this.self, contacted.node, contacted.successors, this.#r);
    this.#isMember = true;
  }

  /**
   * One stabilize round (Zave 2017, stabilize): find the first live successor, adopt its
   * predecessor if that lies between us (after contacting it), refresh the successor list from
   * whichever we adopted, then notify it.
   *
   * Throws {@link NotAMemberError} when not a member and {@link NoLiveSuccessorError} when every
   * successor and every fallback is dead; the node is then no longer a member and should
   * {@link join} again.
   */
  async stabilize(): Promise<void> {
    this.#requireMember("stabilize");
    this.stats.stabilizeRounds++;
    // The successor whose list we adopted during this call, and how often we moved closer.
    let adopted: NodeRef | undefined;
    let moves = 0;
    for (;;) {
      const successor = this.#successors[0];
      if (successor === undefined) {
        await this.#adoptFallbackSuccessor();
        continue;
      }
      if (sameNode(successor, this.self)) {
        // We believe we are alone; a predecessor that contacted us proves otherwise.
        const pred = this.#predecessor;
        if (
          pred !== undefined && !sameNode(pred, this.self) && moves < this.#walkLimit &&
          (await this.#tryAdopt(pred))
        ) {
          adopted = pred;
          moves++;
          continue;
        }
        this.#successors = [this.self];
        break;
      }
      let predOfSuccessor: NodeRef | undefined;
      try {
        const answer = await this.#call(successor.address, { v, type: "get_predecessor" });
        predOfSuccessor = answer.predecessor === null
          ? undefined
          : this.#decode(answer.predecessor);
      } catch {
        this.#forget(successor.address);
        continue;
      }
      if (
        predOfSuccessor !== undefined &&
        between(this.self.id, predOfSuccessor.id, successor.id, "()") &&
        moves < this.#walkLimit &&
        (await this.#tryAdopt(predOfSuccessor))
      ) {
        // Keep walking back: the new successor's predecessor may be closer still.
        adopted = predOfSuccessor;
        moves++;
        continue;
      }
      if (sameNode(adopted, successor) || (await this.#tryAdopt(successor))) break;
      this.#forget(successor.address);
    }
    const first = this.#successors[0];
    if (first !== undefined && !sameNode(first, this.self)) {
      try {
        await this.#call(first.address, { v, type: "notify", node: this.#wire(this.self) });
      } catch {
        // A dead successor is dropped by the next stabilize.
      }
    }
    this.#lastStabilizedAt = this.#clock.now();
  }

  /**
   * Pings the predecessor and forgets it if dead (CHORD `check_predecessor`), so a live notifier
   * can take its place and ownership of its range is no longer claimed by a dead node.
   */
  async checkPredecessor(): Promise<void> {
    const pred = this.#predecessor;
    if (pred === undefined || sameNode(pred, this.self)) return;
    if (!(await this.#isAlive(pred)) && sameNode(this.#predecessor, pred)) {
      this.#predecessor = undefined;
    }
  }

  /**
   * Refreshes up to `count` fingers by lookup (CHORD `fix_fingers`), continuing round-robin where
   * the previous call stopped. Fingers whose start lies before the successor are set to it without
   * a lookup and are not counted.
   */
  async fixFingers(count: number = this.#fingersPerRound): Promise<void> {
    this.#requireMember("fix fingers");
    let lookups = 0;
    for (let scanned = 0; scanned < this.#fingers.size && lookups < count; scanned++) {
      const i = this.#nextFinger;
      this.#nextFinger = (i + 1) % this.#fingers.size;
      const start = this.#fingers.start(i);
      const successor = this.successor;
      if (between(this.self.id, start, successor.id, "(]")) {
        this.#fingers.set(i, successor);
        continue;
      }
      lookups++;
      try {
        this.#fingers.set(i, (await this.lookup(start)).owner);
      } catch {
        this.#fingers.set(i, undefined);
      }
      if (!this.isMember) return;
    }
  }

  /**
   * Finds the owner of `key` by iterative lookup (see `lookup.ts` for why iterative).
   * Throws {@link ChordLookupError} when every route fails, and {@link NoLiveSuccessorError}
   * when this node has found all its successors dead since its last stabilize.
   */
  async lookup(key: ChordId): Promise<LookupResult> {
    this.#requireMember("look up a key");
    this.stats.lookups++;
    try {
      const result = await iterativeLookup(
        this.#lookupContext,
        key,
        this.#lookupStep(key),
        0,
        this.self,
      );
      this.stats.lookupHops += result.hops;
      return result;
    } catch (error) {
      this.stats.lookupFailures++;
      throw error;
    }
  }

  /**
   * Leaves the ring gracefully: tells the successor who its new predecessor is and the
   * predecessor who its new successors are, then stops being a member. Key hand-off is the
   * replication layer's job and happens before this call.
   */
  async leave(): Promise<void> {
    this.#requireMember("leave");
    const pred = this.#predecessor;
    const successors = this.#successors.filter((n) => !sameNode(n, this.self));
    this.#isMember = false;
    this.#successors = [];
    this.#predecessor = undefined;
    this.#fingers.clear();
    const successor = successors[0];
    const sends: Promise<unknown>[] = [];
    if (successor !== undefined) {
      sends.push(this.#call(successor.address, {
        v,
        type: "predecessor_leaving",
        leaving: this.#wire(this.self),
        newPredecessor: pred === undefined ? null : this.#wire(pred),
      }));
    }
    if (pred !== undefined && !sameNode(pred, this.self)) {
      sends.push(this.#call(pred.address, {
        v,
        type: "successor_leaving",
        leaving: this.#wire(this.self),
        successors: successors.map((n) => this.#wire(n)),
      }));
    }
    // Leaving is best effort: a neighbour that misses the message treats us as crashed.
    await Promise.allSettled(sends);
  }

  // --- request handling -------------------------------------------------------------------

  async #handle(request: ChordRequest, _from: NodeAddress): Promise<ChordResponse> {
    this.stats.requestsServed++;
    if (!this.isMember) {
      return {
        v,
        type: "error",
        code: "not_a_member",
        message: `${this.self.address} is not a ring member`,
      };
    }
    try {
      return await this.#serve(request);
    } catch (error) {
      // A request never throws past the boundary; the caller treats the error as a failure.
      const code = error instanceof NoLiveSuccessorError ? error.code : "internal";
      return {
        v,
        type: "error",
        code,
        message: error instanceof Error ? error.message : String(error),
      };
    }
  }

  async #serve(request: ChordRequest): Promise<ChordResponse> {
    switch (request.type) {
      case "ping":
        return { v, type: "pong", node: this.#wire(this.self) };
      case "get_predecessor":
        return {
          v,
          type: "predecessor",
          predecessor: this.#predecessor === undefined ? null : this.#wire(this.#predecessor),
        };
      case "get_successor_list":
        return {
          v,
          type: "successor_list",
          node: this.#wire(this.self),
          successors: this.#wireList(this.#successors),
        };
      case "notify":
        await this.#rectify(this.#decode(request.node));
        return { v, type: "ack" };
      case "find_successor": {
        const step = this.#lookupStep(this.space.fromHex(request.key, "key"));
        return step.kind === "found"
          ? {
            v,
            type: "successor_found",
            owner: this.#wire(step.owner),
            successors: this.#wireList(this.#successors),
          }
          : {
            v,
            type: "closer_nodes",
            nodes: this.#wireList(step.nodes),
            successors: this.#wireList(step.successors),
          };
      }
      case "predecessor_leaving":
        await this.#onPredecessorLeaving(
          this.#decode(request.leaving),
          request.newPredecessor === null ? undefined : this.#decode(request.newPredecessor),
        );
        return { v, type: "ack" };
      case "successor_leaving":
        await this.#onSuccessorLeaving(
          this.#decode(request.leaving),
          request.successors.map((n) => this.#decode(n)),
        );
        return { v, type: "ack" };
    }
  }

  /** Zave 2017, rectify: the notifier becomes our predecessor only if it is a better one. */
  async #rectify(notifier: NodeRef): Promise<void> {
    if (sameNode(notifier, this.self)) return;
    const pred = this.#predecessor;
    if (
      pred === undefined || sameNode(pred, this.self) ||
      between(pred.id, notifier.id, this.self.id, "()")
    ) {
      this.#predecessor = notifier;
      return;
    }
    if (sameNode(pred, notifier)) return;
    if (!(await this.#isAlive(pred)) && sameNode(this.#predecessor, pred)) {
      this.#predecessor = notifier;
    }
  }

  async #onPredecessorLeaving(leaving: NodeRef, replacement: NodeRef | undefined): Promise<void> {
    this.#forget(leaving.address);
    if (!sameNode(this.#predecessor, leaving) && this.#predecessor !== undefined) return;
    this.#predecessor = undefined;
    // Adopt the replacement only after contacting it (Zave 2017).
    if (
      replacement !== undefined && !sameNode(replacement, this.self) &&
      (await this.#isAlive(replacement))
    ) {
      if (this.#predecessor === undefined) this.#predecessor = replacement;
    }
  }

  async #onSuccessorLeaving(leaving: NodeRef, replacements: NodeRef[]): Promise<void> {
    const wasFirst = sameNode(this.#successors[0], leaving);
    this.#forget(leaving.address);
    if (!wasFirst) return;
    for (const candidate of replacements) {
      if (candidate.address === leaving.address) continue;
      if (sameNode(candidate, this.self)) {
        if (this.#successors.length === 0) this.#successors = [this.self];
        return;
      }
      // Adopt the leaver's successor only after contacting it (Zave 2017).
      if (await this.#tryAdopt(candidate)) return;
    }
    // Nobody answered: the next stabilize falls back to other known nodes.
  }

  // --- lookup -----------------------------------------------------------------------------

  #lookupStep(key: ChordId): LookupStep {
    const pred = this.#predecessor;
    if (pred !== undefined && between(pred.id, key, this.self.id, "(]")) {
      return { kind: "found", owner: this.self, alternatives: [] };
    }
    const successor = this.successor;
    if (between(this.self.id, key, successor.id, "(]")) {
      return { kind: "found", owner: successor, alternatives: this.#successors.slice(1) };
    }
    const best = this.#fingers.closestPreceding(key, this.#successors, this.#lookupCandidates);
    // Behind the best hops, the successors preceding the key: a slower route that survives when
    // every long-range hint has just died.
    const chosen = new Set(best.map((n) => n.address));
    const fallback = this.#successors
      .filter((n) => !chosen.has(n.address) && between(this.self.id, n.id, key, "()"))
      .reverse();
    const nodes = [...best, ...fallback];
    // The successor precedes the key here, so `nodes` is never empty; stay safe regardless.
    return nodes.length > 0
      ? { kind: "closer", nodes, successors: this.#successors }
      : { kind: "found", owner: successor, alternatives: this.#successors.slice(1) };
  }

  async #askRemote(node: NodeRef, key: ChordId): Promise<LookupStep> {
    const answer = await this.#call(node.address, {
      v,
      type: "find_successor",
      key: this.space.toHex(key),
    });
    if (answer.type === "successor_found") {
      const owner = this.#decode(answer.owner);
      const successors = answer.successors.map((n) => this.#decode(n));
      const at = successors.findIndex((n) => sameNode(n, owner));
      return { kind: "found", owner, alternatives: at < 0 ? [] : successors.slice(at + 1) };
    }
    return {
      kind: "closer",
      nodes: answer.nodes.map((n) => this.#decode(n)),
      successors: answer.successors.map((n) => this.#decode(n)),
    };
  }

  // --- helpers ----------------------------------------------------------------------------

  /** Contacts `node`, and if it answers as itself, adopts it as first successor with its list. */
  async #tryAdopt(node: NodeRef): Promise<boolean> {
    try {
      const contacted = await this.#contact(node);
      this.#successors = buildSuccessorList(
        this.self,
        contacted.node,
        contacted.successors,
        this.#r,
      );
      return true;
    } catch {
      this.#forget(node.address);
      return false;
    }
  }

  /** Asks `node` for its successor list, checking that the node at its address is still `node`. */
  async #contact(node: NodeRef): Promise<{ node: NodeRef; successors: NodeRef[] }> {
    const answer = await this.#call(node.address, { v, type: "get_successor_list" });
    const answered = this.#decode(answer.node);
    if (!sameNode(answered, node)) {
      throw new ChordProtocolError(
        "node",
        `Expected ${formatNodeRef(node)}, but ${formatNodeRef(answered)} answered`,
      );
    }
    return { node: answered, successors: answer.successors.map((n) => this.#decode(n)) };
  }

  /**
   * All successors are dead: fall back to the nearest live node we still know (fingers,
   * predecessor), contacting each before adopting it. Stabilize then walks back from it through
   * predecessor pointers to our true successor.
   */
  async #adoptFallbackSuccessor(): Promise<void> {
    const known = new Map<string, NodeRef>();
    for (const node of this.#fingers.entries()) {
      if (node !== undefined) known.set(node.address, node);
    }
    if (this.#predecessor !== undefined) known.set(this.#predecessor.address, this.#predecessor);
    known.delete(this.self.address);
    const candidates = [...known.values()].sort((a, b) => {
      const da = this.space.distance(this.self.id, a.id);
      const db = this.space.distance(this.self.id, b.id);
      return da < db ? -1 : da > db ? 1 : 0;
    });
    for (const candidate of candidates) {
      if (await this.#tryAdopt(candidate)) return;
    }
    this.#isMember = false;
    this.#successors = [];
    this.#predecessor = undefined;
    this.#fingers.clear();
    throw new NoLiveSuccessorError(this.self.address);
  }

  /** Forgets a node found dead or gone, everywhere it is referenced. */
  #forget(address: string): void {
    this.#successors = withoutNode(this.#successors, address);
    this.#fingers.forget(address);
    if (this.#predecessor?.address === address) this.#predecessor = undefined;
  }

  async #isAlive(node: NodeRef): Promise<boolean> {
    try {
      const answer = await this.#call(node.address, { v, type: "ping" });
      return sameNode(this.#decode(answer.node), node);
    } catch {
      return false;
    }
  }

  async #call<T extends ChordRequest["type"]>(
    to: NodeAddress,
    request: Extract<ChordRequest, { type: T }>,
  ): Promise<Expected<T>> {
    let response: ChordResponse | undefined;
    for (let attempt = 1; response === undefined; attempt++) {
      try {
        response = await this.#transport.call(to, request);
      } catch (error) {
        this.stats.rpcFailures++;
        // Only a lost message is worth repeating; a peer that answered with garbage is not.
        const isRetryable = error instanceof ChordTransportError && error.code !== "remote_error";
        if (!isRetryable || attempt >= this.#rpcAttempts) throw error;
      }
    }
    if (response.type === "error") {
      this.stats.rpcFailures++;
      throw new ChordTransportError(
        "remote_error",
        to,
        `Request ${request.type} to ${to} failed: ${response.message}`,
      );
    }
    const expected = EXPECTED[request.type] as readonly string[];
    if (!expected.includes(response.type)) {
      this.stats.rpcFailures++;
      throw new ChordProtocolError(
        "type",
        `Invalid field "type": expected ${
          expected.join(" or ")
        } in answer to ${request.type}, got "${response.type}"`,
      );
    }
    return response as Expected<T>;
  }

  #requireMember(operation: string): void {
    if (!this.isMember) throw new NotAMemberError(this.self.address, operation);
  }

  #wire(node: NodeRef): NodeRefWire {
    return encodeNodeRef(this.space, node);
  }

  #wireList(nodes: readonly NodeRef[]): NodeRefWire[] {
    return nodes.map((n) => encodeNodeRef(this.space, n));
  }

  #decode(node: NodeRefWire): NodeRef {
    return decodeNodeRef(this.space, node);
  }
}

function positiveInteger(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`Invalid option "${name}": expected a positive integer, got ${value}`);
  }
  return value;
}
