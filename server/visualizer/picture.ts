/**
 * The picture of the whole ring that the page draws, and {@link PictureBuilder}, which makes one
 * from the states of the live nodes: nodes in id order with their pointers as indexes into one
 * node table, each node's replica set, Zave's invariants evaluated by the ring's own checker, and
 * a timeline of recent events. Pure: the caller says what time it is and what each node reported.
 */
import {
  checkRing,
  type ChordId,
  type ChordNodeState,
  IdSpace,
  type NodeRef,
  type RingViolation,
} from "../chord/mod.ts";

/** Per-node record counts (never names or contents). */
export interface RecordCounts {
  /** Account copies this node holds (primary or replica). */
  accounts: number;
  /** Presence records this node holds. */
  presence: number;
  /** Pending offline mailbox entries this node holds. */
  mailbox: number;
}

/** One node of a {@link RingPicture}. Pointers are indexes into `RingPicture.nodes`. */
export interface PictureNode {
  /** Node id, hexadecimal. */
  id: string;
  /** Ring address (base URL of a server, `sim:N` in the simulator). */
  address: string;
  /** Position on the circle: id / 2^bits, in [0, 1). */
  pos: number;
  /** Whether this node reported its state (false: only named by another node's pointers). */
  live: boolean;
  /** Whether the node says it is a ring member. */
  member: boolean;
  /** Its predecessor, when known. */
  pred: number | null;
  /** Its successor list, nearest first. */
  succ: number[];
  /** Distinct nodes of its finger table, in finger order. */
  fingers: number[];
  /** The K + 1 nodes holding the keys this node owns: itself and its first K live successors. */
  replicas: number[];
  /** Its record counts, when known. */
  counts: RecordCounts | null;
}

/** One broken invariant, drawn on the ring and listed. */
export interface PictureViolation {
  /** The checker's rule (`wrong_successor`, `multiple_rings`, …). */
  rule: RingViolation["kind"];
  /** The nodes involved (indexes into `RingPicture.nodes`). */
  nodes: number[];
  /** A sentence a person can read. */
  message: string;
}

/** Kinds of timeline events. */
export type RingEventKind =
  | "join"
  | "created"
  | "leave"
  | "crash"
  | "merge"
  | "repair"
  | "handoff"
  | "violated"
  | "correct";

/** One entry of the timeline. */
export interface RingEvent {
  /** When it happened or was noticed (ms; wall clock on servers, virtual in the simulator). */
  at: number;
  kind: RingEventKind;
  /** The node it concerns ("" for the ring as a whole). */
  node: string;
  /** A short sentence. */
  detail: string;
}

/** What the page draws: every update is one whole picture. */
export interface RingPicture {
  v: 1;
  /** Increases by one per picture from one builder. */
  seq: number;
  /** Time of the picture (ms). */
  at: number;
  /** Where it comes from. */
  source: "cluster" | "simulation";
  /** Identifier bits. */
  bits: number;
  /** K, copies beyond the primary. */
  replicas: number;
  /** Every node, live or only referenced, in id order. */
  nodes: PictureNode[];
  /** Broken invariants (at most {@link MAX_VIOLATIONS}). */
  violations: PictureViolation[];
  /** How many there were before truncation. */
  violationCount: number;
  /** Recent events, oldest first (at most {@link MAX_EVENTS}). */
  events: RingEvent[];
  /** Servers that are alive per membership but did not answer this gather. */
  unreachable: string[];
}

/** What one live node contributes to a picture. */
export interface NodeInput {
  state: ChordNodeState;
  counts?: RecordCounts | null;
  /** Events the node itself recorded, each with a per-node sequence number (for de-duplication). */
  events?: readonly { seq: number; at: number; kind: RingEventKind; detail: string }[];
  /** Items repaired by this node's replication so far (a counter). */
  repaired?: number;
}

/** Configuration of a {@link PictureBuilder}. */
export interface PictureBuilderOptions {
  /** Identifier bits. @default 160 */
  bits?: number;
  /** K, copies beyond the primary. @default 2 */
  replicas?: number;
  /** Successor list length r the nodes run with (for the full invariants). @default 8 */
  successorListLength?: number;
  /** @default "cluster" */
  source?: RingPicture["source"];
  /**
   * Whether to add a `join` for each node that appears and a `crash` for each that stops
   * reporting. The simulator, which knows what it did, records its own events instead.
   * @default true
   */
  noticesMembership?: boolean;
}

/** Most violations one picture carries. */
export const MAX_VIOLATIONS = 500;
/** Most events one picture carries. */
export const MAX_EVENTS = 200;

/**
 * Turns successive sets of node states into {@link RingPicture}s, remembering what it saw last so
 * that it can add the events nobody reports: a node that stopped answering (crash noticed), a
 * node that appeared, repairs, and the ring becoming incorrect or correct again.
 *
 * @example
 * ```ts
 * const builder = new PictureBuilder({ bits: 32, replicas: 2 });
 * const picture = builder.update(Date.now(), ring.members().map((n) => ({ state: n.state() })));
 * ```
 */
export class PictureBuilder {
  readonly #space: IdSpace;
  readonly #replicas: number;
  readonly #r: number;
  readonly #source: RingPicture["source"];
  readonly #noticesMembership: boolean;
  #seq = 0;
  #events: RingEvent[] = [];
  #seenEvents = new Map<string, number>();
  #lastLive: Set<string> | undefined;
  #leaving = new Set<string>();
  #repaired = new Map<string, number>();
  #wasCorrect: boolean | undefined;

  /** Creates a builder with no history. */
  constructor(options: PictureBuilderOptions = {}) {
    this.#space = new IdSpace(options.bits ?? 160);
    this.#replicas = options.replicas ?? 2;
    this.#r = options.successorListLength ?? 8;
    this.#source = options.source ?? "cluster";
    this.#noticesMembership = options.noticesMembership ?? true;
  }

  /** Adds an event to the timeline (the simulator reports its own joins, leaves and crashes). */
  record(event: RingEvent): void {
    this.#events.push(event);
    if (this.#events.length > MAX_EVENTS) this.#events.splice(0, this.#events.length - MAX_EVENTS);
  }

  /** The picture of the ring formed by `inputs`, the live nodes, at time `at`. */
  update(
    at: number,
    inputs: readonly NodeInput[],
    unreachable: readonly string[] = [],
  ): RingPicture {
    const states = inputs.map((i) => i.state);
    this.#noteEvents(at, inputs);
    const table = new NodeTable(this.#space);
    for (const s of states) table.add(s.self, true);
    for (const s of states) {
      if (s.predecessor) table.add(s.predecessor, false);
      for (const n of s.successorList) table.add(n, false);
      for (const f of s.fingers) if (f) table.add(f, false);
    }
    const nodes = table.sorted();
    const index = new Map(nodes.map((n, i) => [n.address, i]));
    const at_ = (n: NodeRef) => index.get(n.address)!;
    for (const input of inputs) {
      const s = input.state;
      const node = nodes[at_(s.self)]!;
      node.member = s.isMember;
      node.pred = s.predecessor ? at_(s.predecessor) : null;
      node.succ = s.successorList.map(at_);
      node.fingers = [...new Set(s.fingers.filter((f) => f !== undefined).map(at_))];
      const liveSuccessors = node.succ.filter((i) => nodes[i]!.live && i !== at_(s.self));
      node.replicas = s.isMember ? [at_(s.self), ...liveSuccessors.slice(0, this.#replicas)] : [];
      node.counts = input.counts ?? null;
    }
    const violations = checkRing(states, { strength: "full", successorListLength: this.#r })
      .map((v) => describeViolation(v, index, this.#space));
    const isCorrect = violations.length === 0 && states.length > 0;
    if (this.#wasCorrect !== undefined && isCorrect !== this.#wasCorrect) {
      this.record(
        isCorrect
          ? { at, kind: "correct", node: "", detail: "Ring correct again: all invariants hold" }
          : {
            at,
            kind: "violated",
            node: "",
            detail: `${violations.length} invariant violation(s), first: ${violations[0]?.message}`,
          },
      );
    }
    this.#wasCorrect = isCorrect;
    return {
      v: 1,
      seq: ++this.#seq,
      at,
      source: this.#source,
      bits: this.#space.bits,
      replicas: this.#replicas,
      nodes,
      violations: violations.slice(0, MAX_VIOLATIONS),
      violationCount: violations.length,
      events: [...this.#events],
      unreachable: [...unreachable],
    };
  }

  /** Folds the nodes' own events into the timeline and notices joins, departures and repairs. */
  #noteEvents(at: number, inputs: readonly NodeInput[]): void {
    const live = new Set(inputs.map((i) => i.state.self.address));
    const fresh: RingEvent[] = [];
    for (const input of inputs) {
      const address = input.state.self.address;
      const seen = this.#seenEvents.get(address) ?? -1;
      for (const e of input.events ?? []) {
        if (e.seq <= seen) continue;
        fresh.push({ at: e.at, kind: e.kind, node: address, detail: e.detail });
        if (e.kind === "leave") this.#leaving.add(address);
        this.#seenEvents.set(address, e.seq);
      }
      const repaired = input.repaired ?? 0;
      const before = this.#repaired.get(address);
      if (before !== undefined && repaired > before) {
        fresh.push({
          at,
          kind: "repair",
          node: address,
          detail: `Repair done: ${repaired - before} item(s) copied`,
        });
      }
      this.#repaired.set(address, repaired);
    }
    if (this.#lastLive !== undefined && this.#noticesMembership) {
      for (const address of live) {
        if (this.#lastLive.has(address)) continue;
        // A node's own join event arrives with its first report; only note unexplained arrivals.
        if (!fresh.some((e) => e.node === address && (e.kind === "join" || e.kind === "created"))) {
          fresh.push({ at, kind: "join", node: address, detail: "Node appeared" });
        }
      }
      for (const address of this.#lastLive) {
        if (live.has(address)) continue;
        if (this.#leaving.delete(address)) continue; // its "leave" is already on the timeline
        fresh.push({
          at,
          kind: "crash",
          node: address,
          detail: "Crash noticed: stopped answering",
        });
        this.#seenEvents.delete(address);
        this.#repaired.delete(address);
      }
    }
    this.#lastLive = live;
    fresh.sort((a, b) => a.at - b.at);
    for (const e of fresh) this.record(e);
  }
}

/** The nodes a picture names, each once, by address. */
class NodeTable {
  readonly #byAddress = new Map<string, PictureNode & { key: ChordId }>();
  constructor(readonly space: IdSpace) {}

  add(ref: NodeRef, live: boolean): void {
    const known = this.#byAddress.get(ref.address);
    if (known) {
      known.live ||= live;
      return;
    }
    this.#byAddress.set(ref.address, {
      key: ref.id,
      id: this.space.toHex(ref.id),
      address: ref.address,
      pos: positionOf(ref.id, this.space.bits),
      live,
      member: false,
      pred: null,
      succ: [],
      fingers: [],
      replicas: [],
      counts: null,
    });
  }

  sorted(): PictureNode[] {
    return [...this.#byAddress.values()]
      .sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : a.address < b.address ? -1 : 1)
      .map(({ key: _key, ...node }) => node);
  }
}

/** `id / 2^bits` as a float in [0, 1). */
export function positionOf(id: ChordId, bits: number): number {
  // The top 52 bits are all a double can hold; the rest cannot move a dot on a screen.
  const shift = bits > 52 ? BigInt(bits - 52) : 0n;
  const top = Number(id >> shift);
  return top / 2 ** Math.min(bits, 52);
}

/** A checker violation as the page shows it. */
function describeViolation(
  v: RingViolation,
  index: ReadonlyMap<string, number>,
  space: IdSpace,
): PictureViolation {
  const at = (n: NodeRef | undefined) => (n ? index.get(n.address) : undefined);
  const name = (n: NodeRef | undefined) =>
    n ? `${space.toHex(n.id).slice(0, 8)} (${n.address})` : "nothing";
  const nodes = (...refs: (NodeRef | undefined)[]) =>
    refs.map(at).filter((i): i is number => i !== undefined);
  switch (v.kind) {
    case "not_a_member":
      return { rule: v.kind, nodes: nodes(v.node), message: `${name(v.node)} is not a member` };
    case "no_live_successor":
      return {
        rule: v.kind,
        nodes: nodes(v.node),
        message: `${name(v.node)} has no live node in its successor list`,
      };
    case "multiple_rings":
      return {
        rule: v.kind,
        nodes: nodes(...v.rings.flat()),
        message: `The ring has split into ${v.rings.length} rings (sizes ${
          v.rings.map((r) => r.length).join(", ")
        })`,
      };
    case "ring_not_ordered":
      return {
        rule: v.kind,
        nodes: nodes(...v.ring),
        message: `A ring of ${v.ring.length} nodes wraps around the id space ${v.wraps} times`,
      };
    case "wrong_successor":
      return {
        rule: v.kind,
        nodes: nodes(v.node, v.actual, v.expected),
        message: `${name(v.node)} has successor ${name(v.actual)}, expected ${name(v.expected)}`,
      };
    case "successor_list_mismatch":
      return {
        rule: v.kind,
        nodes: nodes(v.node),
        message: `${name(v.node)} successor list entry ${v.index} is ${name(v.actual)}, expected ${
          name(v.expected)
        }`,
      };
    case "wrong_predecessor":
      return {
        rule: v.kind,
        nodes: nodes(v.node, v.actual),
        message: `${name(v.node)} has predecessor ${name(v.actual)}, expected ${name(v.expected)}`,
      };
    case "keys_unowned":
      return {
        rule: v.kind,
        nodes: [],
        message: `Keys (${space.toHex(v.from).slice(0, 8)}, ${
          space.toHex(v.to).slice(0, 8)
        }] are owned by no node`,
      };
    case "keys_multiply_owned":
      return {
        rule: v.kind,
        nodes: [],
        message: `Keys (${space.toHex(v.from).slice(0, 8)}, ${
          space.toHex(v.to).slice(0, 8)
        }] are claimed by ${v.owners} nodes`,
      };
  }
}
