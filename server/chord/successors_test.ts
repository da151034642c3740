import { deepStrictEqual } from "node:assert/strict";
import type { NodeRef } from "./node_ref.ts";
import { buildSuccessorList, withoutNode } from "./successors.ts";

const n = (id: number): NodeRef => ({ id: BigInt(id), address: `sim:${id}` });

Deno.test("a successor list is the contacted successor followed by its own list, cut to r", () => {
  deepStrictEqual(buildSuccessorList(n(3), n(5), [n(9), n(12), n(14)], 3), [n(5), n(9), n(12)]);
});

Deno.test("a successor list ends at the node itself once the ring has closed", () => {
  deepStrictEqual(buildSuccessorList(n(3), n(5), [n(9), n(3), n(5), n(9)], 8), [n(5), n(9), n(3)]);
  deepStrictEqual(buildSuccessorList(n(3), n(3), [n(3)], 8), [n(3)]);
});

Deno.test("a successor list never repeats a node", () => {
  deepStrictEqual(buildSuccessorList(n(3), n(5), [n(5), n(9)], 8), [n(5)]);
});

Deno.test("withoutNode drops a dead node wherever it is", () => {
  deepStrictEqual(withoutNode([n(5), n(9), n(12)], "sim:9"), [n(5), n(12)]);
});
