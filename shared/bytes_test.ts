import assert from "node:assert/strict";
import { concatBytes, takeJoined } from "./bytes.ts";

const b = (...xs: number[]) => new Uint8Array(xs);

Deno.test("bytes: takeJoined takes queued frames while they fit, at least one, in order", () => {
  const queue = [b(1, 2), b(3), b(4, 5, 6), b(7)];
  assert.deepEqual(takeJoined(queue, 3), b(1, 2, 3));
  assert.deepEqual(queue, [b(4, 5, 6), b(7)]);
  // One frame larger than the limit still goes, alone.
  assert.deepEqual(takeJoined(queue, 2), b(4, 5, 6));
  assert.deepEqual(takeJoined(queue, 100), b(7));
  assert.equal(queue.length, 0);
  assert.deepEqual(concatBytes([b(1), b(), b(2, 3)]), b(1, 2, 3));
});
