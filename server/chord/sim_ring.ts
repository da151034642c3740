/**
 * A ring of {@link ChordNode}s on a {@link SimNetwork}, driven in rounds: the harness that the
 * simulation tests and the benchmark share. It knows the ground truth (which nodes are alive),
 * so it can check invariants and the correctness of lookups.
 */

import { ChordJoinError } from "./errors.ts";
import { type ChordId, IdSpace } from "./id.ts";
import { checkRing, type RingViolation } from "./invariants.ts";
import { ChordNode, type ChordNodeOptions } from "./node.ts";
import type { NodeRef } from "./node_ref.ts";
import { pick, randomBigInt } from "./random.ts";
import { SimNetwork, type SimNetworkOptions } from "./sim_network.ts";

/** Configuration of a {@link SimRing}. */
export interface SimRingOptions extends SimNetworkOptions {
  /**
   * Id width `m`.
   * @default {32}
   */
  readonly bits?: number;
  /** Options for every node (its `bits` and `id` are set by the ring). */
  readonly node?: Omit<ChordNodeOptions, "bits" | "id">;
  /**
   * Virtual time between maintenance rounds, in milliseconds.
   * @default {1000}
   */
  readonly roundMs?: number;
}

/** What one maintenance round did. */
export interface RoundReport {
  /** Live non-members (cut off, or failed to join) that tried to join again. */
  readonly rejoined: number;
}

/** A simulated ring with ground truth, driven in rounds. */
export class SimRing {
  /** The simulated network. */
  readonly network: SimNetwork;
  /** The id space. */
  readonly space: IdSpace;
  /** Live nodes (joined or not) by address. */
  readonly nodes = new Map<string, ChordNode>();

  readonly #options: SimRingOptions;
  readonly #usedIds = new Set<ChordId>();
  #counter = 0;
  #rounds = 0;

  /** Creates an empty ring. */
  constructor(options: SimRingOptions = {}) {
    this.#options = options;
    this.space = new IdSpace(options.bits ?? 32);
    this.network = new SimNetwork(this.space, options);
  }

  /** Number of rounds run so far. */
  get rounds(): number {
    return this.#rounds;
  }

  /** The successor list length the nodes use. */
  get successorListLength(): number {
    return this.#options.node?.successorListLength ?? 8;
  }

  /** Live nodes that are ring members. */
  members(): ChordNode[] {
    return [...this.nodes.values()].filter((n) => n.isMember);
  }

  /** Creates a node with a fresh random id (not yet a member). */
  addNode(): ChordNode {
    let id: ChordId;
    do id = randomBigInt(this.network.random, this.space.bits); while (this.#usedIds.has(id));
    this.#usedIds.add(id);
    const address = `sim:${this.#counter++}`;
    const node = new ChordNode(
      {
        transport: this.network.transport(address),
        clock: this.network.clock,
        random: this.network.random,
      },
      { ...this.#options.node, bits: this.space.bits, id },
    );
    this.nodes.set(address, node);
    return node;
  }

  /** Creates the first node and its one-node ring. */
  bootstrap(): ChordNode {
    const node = this.addNode();
    node.create();
    return node;
  }

  /**
   * Adds a node and joins it through a random member. Like a real server, it retries through
   * another member after a maintenance round when a join fails (for example the successor it
   * found has just crashed), up to `attempts` times.
   */
  async join(attempts = 5): Promise<ChordNode> {
    const node = this.addNode();
    for (let attempt = 1;; attempt++) {
      const via = pick(this.network.random, this.members());
      try {
        await this.network.run(node.join(via.self.address));
        return node;
      } catch (error) {
        if (!(error instanceof ChordJoinError) || attempt >= attempts) throw error;
        // Like a server retrying after a stabilize period: the ring repairs stale pointers first
        // (and the round itself retries the join of this non-member).
        await this.round();
        if (node.isMember) return node;
      }
    }
  }

  /** Crashes a node: it stops answering at once and is no longer live. */
  crash(node: ChordNode): void {
    this.network.crash(node.self.address);
    this.nodes.delete(node.self.address);
  }

  /** Lets a node leave gracefully. */
  async leave(node: ChordNode): Promise<void> {
    await this.network.run(node.leave());
    this.network.crash(node.self.address);
    this.nodes.delete(node.self.address);
  }

  /**
   * One maintenance round on every member, concurrently: stabilize, check the predecessor, fix
   * fingers. A node cut off from the ring joins again through a random member.
   */
  async round(fingers?: number): Promise<RoundReport> {
    this.#rounds++;
    const start = this.network.clock.now();
    let rejoined = 0;
    const rejoin = async (node: ChordNode) => {
      const others = this.members();
      if (others.length === 0) return;
      rejoined++;
      await node.join(pick(this.network.random, others).self.address).catch(() => {});
    };
    await this.network.runAll([...this.nodes.values()].map(async (node) => {
      // A live node that is not a member was cut off (or failed to join): it joins again.
      if (!node.isMember) return await rejoin(node);
      try {
        await node.stabilize();
        await node.checkPredecessor();
        await node.fixFingers(fingers);
      } catch {
        if (!node.isMember) await rejoin(node);
      }
    }));
    await this.network.clock.advanceTo(start + (this.#options.roundMs ?? 1000));
    return { rejoined };
  }

  /** Checks the ring over the live nodes. */
  check(strength: "weak" | "full"): RingViolation[] {
    const states = [...this.nodes.values()].map((n) => n.state());
    return checkRing(states, { strength, successorListLength: this.successorListLength });
  }

  /**
   * Runs rounds until the full invariants hold, checking the weak ones after every round.
   * Returns the number of rounds, or throws after `maxRounds` with the last violations.
   */
  async converge(maxRounds: number, fingers?: number): Promise<number> {
    for (let i = 0; i <= maxRounds; i++) {
      if (this.check("full").length === 0) return i;
      if (i === maxRounds) break;
      await this.round(fingers);
    }
    const violations = this.check("full");
    throw new Error(
      `Cannot converge within ${maxRounds} rounds: ${violations.length} violations, first ${
        JSON.stringify(
          violations.slice(0, 3),
          (_k, v) => (typeof v === "bigint" ? v.toString(16) : v),
        )
      }`,
    );
  }

  /** The live member that owns `key` according to ground truth. */
  trueOwner(key: ChordId): NodeRef {
    return new OwnerIndex(this.members().map((n) => n.self)).ownerOf(key);
  }

  /** A random id of the space. */
  randomKey(): ChordId {
    return randomBigInt(this.network.random, this.space.bits);
  }
}

/** Sorted ids of nodes, and the owner of a key among them by binary search (fast ground truth). */
export class OwnerIndex {
  readonly #sorted: NodeRef[];

  /** Indexes `nodes`. */
  constructor(nodes: readonly NodeRef[]) {
    this.#sorted = [...nodes].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** The node owning `key`: the first node at or after it, wrapping around. */
  ownerOf(key: ChordId): NodeRef {
    const sorted = this.#sorted;
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid]!.id < key) lo = mid + 1;
      else hi = mid;
    }
    const owner = sorted[lo] ?? sorted[0];
    if (owner === undefined) throw new RangeError("Cannot find an owner: no nodes");
    return owner;
  }
}
