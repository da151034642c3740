import { deepStrictEqual } from "node:assert/strict";
import { FingerTable } from "./fingers.ts";
import { IdSpace } from "./id.ts";
import type { NodeRef } from "./node_ref.ts";

const n = (id: number): NodeRef => ({ id: BigInt(id), address: `sim:${id}` });
const space = new IdSpace(6);

Deno.test("finger i starts at self + 2^i", () => {
  const table = new FingerTable(space, n(60));
  deepStrictEqual([0, 1, 2, 3, 4, 5].map((i) => table.start(i)), [61n, 62n, 0n, 4n, 12n, 28n]);
});

Deno.test("closestPreceding returns known nodes strictly between self and key, nearest the key first", () => {
  const table = new FingerTable(space, n(8));
  table.set(0, n(10));
  table.set(3, n(20));
  table.set(4, n(30));
  table.set(5, n(45));
  // 45 is past the key 40; 40 itself would own the key, so it is not "preceding".
  deepStrictEqual(table.closestPreceding(40n, [n(12), n(40)], 3), [n(30), n(20), n(12)]);
  // Wrapping: key 2 from self 8 — everything up to 63 and 0..1 precedes it.
  deepStrictEqual(table.closestPreceding(2n, [], 2), [n(45), n(30)]);
});

Deno.test("forgetting a dead node clears every slot pointing at it", () => {
  const table = new FingerTable(space, n(8));
  table.set(1, n(10));
  table.set(2, n(10));
  table.set(3, n(20));
  table.forget("sim:10");
  deepStrictEqual(table.entries().filter((e) => e !== undefined), [n(20)]);
});
