import { deepStrictEqual, ok } from "node:assert/strict";
import { checkRing, type RingViolation } from "./invariants.ts";
import type { ChordNodeState } from "./node.ts";
import type { NodeRef } from "./node_ref.ts";

const n = (id: number): NodeRef => ({ id: BigInt(id), address: `sim:${id}` });

/** A converged ring of the given ids with successor lists of length r. */
function ring(ids: number[], r: number): ChordNodeState[] {
  const sorted = [...ids].sort((a, b) => a - b);
  return sorted.map((id, i) => ({
    self: n(id),
    isMember: true,
    predecessor: n(sorted[(i - 1 + sorted.length) % sorted.length]!),
    successorList: Array.from(
      { length: Math.min(r, sorted.length) },
      (_, k) => n(sorted[(i + 1 + k) % sorted.length]!),
    ),
    fingers: [],
  }));
}

function kinds(violations: RingViolation[]): string[] {
  return [...new Set(violations.map((v) => v.kind))].sort();
}

const options = { strength: "full", successorListLength: 3 } as const;

Deno.test("a converged ring has no violations", () => {
  deepStrictEqual(checkRing(ring([3, 7, 20, 41, 60], 3), options), []);
  deepStrictEqual(checkRing(ring([3, 7], 3), options), []);
  deepStrictEqual(checkRing(ring([3], 3), options), []);
});

Deno.test("a one-node ring may know no predecessor", () => {
  deepStrictEqual(checkRing([{ ...ring([3], 3)[0]!, predecessor: undefined }], options), []);
});

Deno.test("two separate rings are reported as a split", () => {
  const left = ring([3, 7, 20], 2);
  const right = ring([41, 50, 60], 2);
  const violations = checkRing([...left, ...right], { ...options, successorListLength: 2 });
  ok(kinds(violations).includes("multiple_rings"));
  ok(
    checkRing([...left, ...right], { strength: "weak", successorListLength: 2 }).some((v) =>
      v.kind === "multiple_rings"
    ),
  );
});

Deno.test("a ring that wraps around the id space twice is reported as not ordered", () => {
  // 3 → 41 → 7 → 60 → 3: every node is visited, but the cycle goes round twice.
  const next: Record<number, number> = { 3: 41, 41: 7, 7: 60, 60: 3 };
  const states = ring([3, 7, 41, 60], 1).map((s) => ({
    ...s,
    successorList: [n(next[Number(s.self.id)]!)],
  }));
  const weak = checkRing(states, { strength: "weak", successorListLength: 1 });
  deepStrictEqual(kinds(weak), ["ring_not_ordered"]);
});

Deno.test("a member whose successors are all dead has no live successor", () => {
  const states = ring([3, 7, 20, 41], 2);
  // Drop 7 and 20 from the live set: 3's list [7, 20] is all dead.
  const live = states.filter((s) => s.self.id !== 7n && s.self.id !== 20n);
  const weak = checkRing(live, { strength: "weak", successorListLength: 2 });
  deepStrictEqual(weak.map((v) => v.kind), ["no_live_successor"]);
});

Deno.test("a stale successor list entry and a wrong predecessor are reported with what was expected", () => {
  const states = ring([3, 7, 20, 41], 3);
  states[1] = { ...states[1]!, successorList: [n(20), n(3), n(41)] };
  states[2] = { ...states[2]!, predecessor: n(3) };
  const violations = checkRing(states, options);
  const mismatch = violations.find((v) => v.kind === "successor_list_mismatch");
  ok(mismatch?.kind === "successor_list_mismatch");
  deepStrictEqual([mismatch.node, mismatch.index, mismatch.expected], [n(7), 1, n(41)]);
  const pred = violations.find((v) => v.kind === "wrong_predecessor");
  ok(pred?.kind === "wrong_predecessor");
  deepStrictEqual([pred.node, pred.expected, pred.actual], [n(20), n(7), n(3)]);
  // 20 claims (3, 20] and 7 claims (3, 7]: keys 4..7 have two owners.
  const doubled = violations.find((v) => v.kind === "keys_multiply_owned");
  ok(doubled?.kind === "keys_multiply_owned");
  deepStrictEqual([doubled.from, doubled.to, doubled.owners], [3n, 7n, 2]);
});

Deno.test("a node with an unknown predecessor leaves its range unowned", () => {
  const states = ring([3, 7, 20, 41], 3);
  states[0] = { ...states[0]!, predecessor: undefined };
  const violations = checkRing(states, options);
  ok(violations.some((v) => v.kind === "keys_unowned" && v.from === 41n && v.to === 3n));
});

Deno.test("a live node that is not a member is reported", () => {
  const states = [...ring([3, 7], 3), {
    self: n(9),
    isMember: false,
    predecessor: undefined,
    successorList: [],
    fingers: [],
  }];
  deepStrictEqual(kinds(checkRing(states, options)), ["not_a_member"]);
});
