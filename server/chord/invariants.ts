/**
 * The ring invariant checker: given the states of the live nodes, reports every way the ring
 * differs from one correctly ordered ring (Zave 2017, §3: AtLeastOneRing, AtMostOneRing,
 * OrderedRing, ConnectedAppendages; plus successor lists and key ownership once converged).
 * Violations are typed values, for the simulation tests and the integration tests alike.
 */

import type { ChordId } from "./id.ts";
import { type NodeRef, sameNode } from "./node_ref.ts";
import type { ChordNodeState } from "./node.ts";

/** One way the ring is broken. */
export type RingViolation =
  /** A live node is not a ring member (never joined, or was cut off). */
  | { readonly kind: "not_a_member"; readonly node: NodeRef }
  /** A member has no live node in its successor list. */
  | { readonly kind: "no_live_successor"; readonly node: NodeRef }
  /** Following best successors leads to more than one cycle (the ring has split). */
  | { readonly kind: "multiple_rings"; readonly rings: readonly (readonly NodeRef[])[] }
  /** A cycle of best successors wraps around the id space more than once (loopy ring). */
  | { readonly kind: "ring_not_ordered"; readonly ring: readonly NodeRef[]; readonly wraps: number }
  /** Following first successors from a member does not visit every member once, in id order. */
  | {
    readonly kind: "wrong_successor";
    readonly node: NodeRef;
    readonly expected: NodeRef;
    readonly actual: NodeRef | undefined;
  }
  /** A successor list entry differs from the ring order. */
  | {
    readonly kind: "successor_list_mismatch";
    readonly node: NodeRef;
    readonly index: number;
    readonly expected: NodeRef | undefined;
    readonly actual: NodeRef | undefined;
  }
  /** A predecessor pointer differs from the ring order. */
  | {
    readonly kind: "wrong_predecessor";
    readonly node: NodeRef;
    readonly expected: NodeRef;
    readonly actual: NodeRef | undefined;
  }
  /** Keys in `(from, to]` are claimed by no node. */
  | { readonly kind: "keys_unowned"; readonly from: ChordId; readonly to: ChordId }
  /** Keys in `(from, to]` are claimed by several nodes. */
  | {
    readonly kind: "keys_multiply_owned";
    readonly from: ChordId;
    readonly to: ChordId;
    readonly owners: number;
  };

/** How much to check. */
export interface RingCheckOptions {
  /**
   * `"weak"`: the invariants that must hold at all times, even during churn (Zave 2017: one
   * ordered ring of best successors, every member reaching it). `"full"`: the ring has converged:
   * exact successors, successor lists, predecessors and key ownership.
   */
  readonly strength: "weak" | "full";
  /** The successor list length `r` the nodes were configured with (needed for `"full"`). */
  readonly successorListLength: number;
}

/**
 * Checks the ring formed by `states`, the states of every live node (crashed nodes must not be
 * included: liveness is membership of this list). Returns the violations; an empty list means
 * the ring is correct at the requested strength.
 *
 * @example
 * ```ts
 * const violations = checkRing(nodes.map((n) => n.state()), { strength: "full", successorListLength: 8 });
 * if (violations.length > 0) console.error(violations);
 * ```
 */
export function checkRing(
  states: readonly ChordNodeState[],
  options: RingCheckOptions,
): RingViolation[] {
  const violations: RingViolation[] = [];
  const live = new Map<string, ChordNodeState>();
  for (const state of states) live.set(state.self.address, state);
  const members = states.filter((s) => s.isMember);
  for (const state of states) {
    if (!state.isMember) violations.push({ kind: "not_a_member", node: state.self });
  }
  if (members.length === 0) return violations;

  // Best successor: the first live entry of the successor list (Zave 2017).
  const best = new Map<string, NodeRef>();
  for (const state of members) {
    const next = state.successorList.find((n) => isLiveMember(live.get(n.address), n));
    if (next === undefined) violations.push({ kind: "no_live_successor", node: state.self });
    else best.set(state.self.address, next);
  }
  violations.push(...checkCycles(members, best));
  if (options.strength === "weak") return violations;

  const ring = [...members].sort((
    a,
    b,
  ) => (a.self.id < b.self.id ? -1 : a.self.id > b.self.id ? 1 : 0));
  const n = ring.length;
  ring.forEach((state, i) => {
    const expectedSuccessor = ring[(i + 1) % n]!.self;
    const actual = state.successorList[0];
    if (!sameNode(actual, expectedSuccessor)) {
      violations.push({
        kind: "wrong_successor",
        node: state.self,
        expected: expectedSuccessor,
        actual,
      });
    }
    const expectedLength = Math.min(options.successorListLength, n);
    for (let k = 0; k < Math.max(expectedLength, state.successorList.length); k++) {
      const expected = k < expectedLength ? ring[(i + 1 + k) % n]!.self : undefined;
      const got = state.successorList[k];
      if (!sameNode(expected, got) && !(expected === undefined && got === undefined)) {
        violations.push({
          kind: "successor_list_mismatch",
          node: state.self,
          index: k,
          expected,
          actual: got,
        });
        break;
      }
    }
    const expectedPredecessor = ring[(i - 1 + n) % n]!.self;
    const pred = state.predecessor;
    // A one-node ring may know no predecessor (or itself).
    if (
      !(n === 1 && (pred === undefined || sameNode(pred, state.self))) &&
      !sameNode(pred, expectedPredecessor)
    ) {
      violations.push({
        kind: "wrong_predecessor",
        node: state.self,
        expected: expectedPredecessor,
        actual: pred,
      });
    }
  });
  violations.push(...checkOwnership(ring));
  return violations;
}

/** Zave 2017 AtLeastOneRing / AtMostOneRing / OrderedRing over the best-successor graph. */
function checkCycles(
  members: readonly ChordNodeState[],
  best: Map<string, NodeRef>,
): RingViolation[] {
  const violations: RingViolation[] = [];
  // Each member has at most one best successor: a functional graph. Find its cycles.
  const colour = new Map<string, number>(); // walk index that first visited the node
  const cycles: NodeRef[][] = [];
  members.forEach((start, walk) => {
    const path: string[] = [];
    let address: string | undefined = start.self.address;
    while (address !== undefined && !colour.has(address)) {
      colour.set(address, walk);
      path.push(address);
      address = best.get(address)?.address;
    }
    if (address !== undefined && colour.get(address) === walk) {
      const cycle = path.slice(path.indexOf(address));
      cycles.push(cycle.map((a) => members.find((m) => m.self.address === a)!.self));
    }
  });
  if (cycles.length > 1) violations.push({ kind: "multiple_rings", rings: cycles });
  for (const cycle of cycles) {
    let wraps = 0;
    for (let i = 0; i < cycle.length; i++) {
      if (cycle[(i + 1) % cycle.length]!.id <= cycle[i]!.id) wraps++;
    }
    if (wraps > 1) violations.push({ kind: "ring_not_ordered", ring: cycle, wraps });
  }
  return violations;
}

/** Every key has exactly one owner: the arcs `(predecessor, self]` of all members tile the ring. */
function checkOwnership(ring: readonly ChordNodeState[]): RingViolation[] {
  if (ring.length === 1) return [];
  // Boundaries are member ids and predecessor ids; between consecutive boundaries ownership is
  // constant, so counting owners of each boundary id (the right end of a segment) is exact.
  const boundaries = new Set<ChordId>();
  const arcs: [ChordId, ChordId][] = [];
  for (const state of ring) {
    boundaries.add(state.self.id);
    if (state.predecessor !== undefined) {
      boundaries.add(state.predecessor.id);
      arcs.push([state.predecessor.id, state.self.id]);
    }
  }
  const points = [...boundaries].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  // Sweep: count arcs covering each point using a difference array over point indices.
  const index = new Map(points.map((p, i) => [p, i]));
  const delta = new Array<number>(points.length + 1).fill(0);
  let wrapping = 0;
  for (const [from, to] of arcs) {
    const a = index.get(from)!;
    const b = index.get(to)!;
    if (a < b) {
      delta[a + 1]!++;
      delta[b + 1]!--;
    } else {
      // (from, to] wraps past zero (or is the whole ring when from === to).
      wrapping++;
      delta[b + 1]!--;
      delta[a + 1]!++;
    }
  }
  const violations: RingViolation[] = [];
  let count = wrapping;
  for (let i = 0; i < points.length; i++) {
    count += delta[i]!;
    const owners = count;
    const to = points[i]!;
    const from = points[(i - 1 + points.length) % points.length]!;
    if (owners === 0) violations.push({ kind: "keys_unowned", from, to });
    else if (owners > 1) violations.push({ kind: "keys_multiply_owned", from, to, owners });
  }
  return violations;
}

function isLiveMember(state: ChordNodeState | undefined, node: NodeRef): boolean {
  return state !== undefined && state.isMember && sameNode(state.self, node);
}
