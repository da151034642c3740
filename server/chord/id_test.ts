import { deepStrictEqual, ok, throws } from "node:assert/strict";
import { ChordProtocolError } from "./errors.ts";
import { between, IdSpace, type IntervalBounds } from "./id.ts";

const ALL_BOUNDS: IntervalBounds[] = ["()", "(]", "[)", "[]"];

/** The slow reference: walk clockwise from `a` to `b` one id at a time, collecting the arc. */
function referenceArc(a: number, b: number, bounds: IntervalBounds, size: number): Set<number> {
  const arc = new Set<number>();
  if (bounds[0] === "[") arc.add(a);
  // Strictly inside: every id met after leaving `a` before arriving at `b` (a full turn when a === b).
  for (let x = (a + 1) % size; x !== b; x = (x + 1) % size) arc.add(x);
  if (a === b && bounds === "()") arc.delete(a);
  else if (a === b) { for (let x = 0; x < size; x++) arc.add(x); }
  if (bounds[1] === "]") arc.add(b);
  return arc;
}

Deno.test("between agrees with a slow walk around a 16-id ring for every a, x, b and bound", () => {
  const size = 16;
  let cases = 0;
  for (const bounds of ALL_BOUNDS) {
    for (let a = 0; a < size; a++) {
      for (let b = 0; b < size; b++) {
        const arc = referenceArc(a, b, bounds, size);
        for (let x = 0; x < size; x++) {
          deepStrictEqual(
            between(BigInt(a), BigInt(x), BigInt(b), bounds),
            arc.has(x),
            `between(${a}, ${x}, ${b}, "${bounds}")`,
          );
          cases++;
        }
      }
    }
  }
  deepStrictEqual(cases, 4 * 16 * 16 * 16);
});

Deno.test("between treats a === b as the whole ring, excluding a only when open", () => {
  ok(!between(5n, 5n, 5n, "()"));
  ok(between(5n, 6n, 5n, "()"));
  ok(between(5n, 5n, 5n, "(]"));
  ok(between(5n, 5n, 5n, "[)"));
});

Deno.test("ring arithmetic wraps around 2^m", () => {
  const space = new IdSpace(4);
  deepStrictEqual(space.size, 16n);
  deepStrictEqual(space.add(14n, 3n), 1n);
  deepStrictEqual(space.add(1n, -3n), 14n);
  deepStrictEqual(space.distance(14n, 1n), 3n);
  deepStrictEqual(space.distance(1n, 14n), 13n);
  deepStrictEqual(space.fingerStart(15n, 0), 0n);
  deepStrictEqual(space.fingerStart(3n, 3), 11n);
});

Deno.test("idFromKey is the leading m bits of SHA-1 as Web Crypto computes it", async () => {
  for (const key of ["", "user:alice", "https://10.0.0.2:8443", "ünïcødé"]) {
    const digest = new Uint8Array(
      await crypto.subtle.digest("SHA-1", new TextEncoder().encode(key)),
    );
    const full = BigInt("0x" + Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""));
    for (const bits of [1, 4, 16, 63, 64, 65, 160]) {
      deepStrictEqual(
        new IdSpace(bits).idFromKey(key),
        full >> BigInt(160 - bits),
        `${key}/${bits}`,
      );
    }
  }
});

Deno.test("ids round-trip through fixed-width hex", () => {
  const space = new IdSpace(10);
  deepStrictEqual(space.toHex(5n), "005");
  deepStrictEqual(space.fromHex("3ff", "id"), 1023n);
  deepStrictEqual(new IdSpace(160).toHex(1n).length, 40);
});

Deno.test("fromHex rejects malformed ids, naming the field", () => {
  const space = new IdSpace(10);
  for (const bad of ["400", "3FF", "12", "0x12", "zzz", 12, null, undefined]) {
    throws(() => space.fromHex(bad, "node.id"), (error: unknown) => {
      ok(error instanceof ChordProtocolError);
      deepStrictEqual(error.path, "node.id");
      ok(error.message.includes("node.id"));
      return true;
    });
  }
});

Deno.test("an id space must be 1 to 160 bits wide", () => {
  throws(() => new IdSpace(0), RangeError);
  throws(() => new IdSpace(161), RangeError);
  throws(() => new IdSpace(2.5), RangeError);
});
