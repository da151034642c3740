/**
 * The identifier space of the ring: ids are `bigint`s in `[0, 2^bits)`, ordered clockwise with
 * wrap-around. Production uses 160 bits (SHA-1, as in the CHORD paper); tests use tiny spaces so
 * that every case can be enumerated.
 */

import { sha1 } from "./_sha1.ts";
import { ChordProtocolError } from "./errors.ts";

/** A position on the ring. */
export type ChordId = bigint;

/** The largest supported width: all of SHA-1. */
export const MAX_ID_BITS = 160;

/**
 * Which ends of a ring interval are included: `"()"` open, `"(]"` open-closed, `"[)"`
 * closed-open, `"[]"` closed.
 */
export type IntervalBounds = "()" | "(]" | "[)" | "[]";

/**
 * Reports whether `x` lies on the clockwise arc from `a` to `b`, with the ends included as
 * `bounds` says. When `a === b` the arc is the whole ring: `"()"` then excludes only `a` itself,
 * every other form includes every id (the CHORD convention for a one-node ring).
 *
 * @example
 * ```ts
 * between(14n, 1n, 3n, "()"); // true: 14 → 15 → 0 → 1 → 2 → 3 wraps past zero
 * between(pred, key, self, "(]"); // does `self` own `key`?
 * ```
 */
export function between(
  a: ChordId,
  x: ChordId,
  b: ChordId,
  bounds: IntervalBounds = "()",
): boolean {
  if (a === b) return bounds === "()" ? x !== a : true;
  const afterA = bounds[0] === "[" ? x >= a : x > a;
  const beforeB = bounds[1] === "]" ? x <= b : x < b;
  // Without wrap the arc is a ∩ b; once it crosses zero it is a ∪ b.
  return a < b ? afterA && beforeB : afterA || beforeB;
}

/** An identifier space of a fixed bit width: arithmetic, hashing and hex encoding of ids. */
export class IdSpace {
  /** Number of bits `m` of every id. */
  readonly bits: number;
  /** `2^bits`: the number of ids on the ring. */
  readonly size: bigint;
  /** Length of the fixed-width lowercase hex form used on the wire. */
  readonly hexLength: number;

  /** Creates a space of `bits` bits (1 to 160). */
  constructor(bits: number) {
    if (!Number.isInteger(bits) || bits < 1 || bits > MAX_ID_BITS) {
      throw new RangeError(`Cannot create id space: bits must be an integer 1–160, got ${bits}`);
    }
    this.bits = bits;
    this.size = 1n << BigInt(bits);
    this.hexLength = Math.ceil(bits / 4);
  }

  /** Returns `(id + delta) mod 2^bits`. */
  add(id: ChordId, delta: bigint): ChordId {
    const sum = (id + delta) % this.size;
    return sum < 0n ? sum + this.size : sum;
  }

  /** Clockwise distance from `from` to `to`, in `[0, 2^bits)`. */
  distance(from: ChordId, to: ChordId): bigint {
    return this.add(to, -from);
  }

  /** Start of finger `i` of node `n`: `n + 2^i` (Stoica et al. 2001, Table 1, 0-based). */
  fingerStart(n: ChordId, i: number): ChordId {
    return this.add(n, 1n << BigInt(i));
  }

  /** Reports whether `id` is a valid id of this space. */
  contains(id: ChordId): boolean {
    return id >= 0n && id < this.size;
  }

  /**
   * Hashes a key (a node address, `"user:alice"`, …) into the space: the leading `bits` bits of
   * SHA-1 of its UTF-8 bytes.
   */
  idFromKey(key: string): ChordId {
    const digest = sha1(new TextEncoder().encode(key));
    let value = 0n;
    for (const byte of digest) value = (value << 8n) | BigInt(byte);
    return value >> BigInt(MAX_ID_BITS - this.bits);
  }

  /** Fixed-width lowercase hex form of an id, as it travels on the wire. */
  toHex(id: ChordId): string {
    return id.toString(16).padStart(this.hexLength, "0");
  }

  /**
   * Parses the wire form of an id, or throws a {@link ChordProtocolError} naming `path`.
   */
  fromHex(hex: unknown, path: string): ChordId {
    if (typeof hex !== "string" || hex.length !== this.hexLength || !/^[0-9a-f]+$/.test(hex)) {
      throw new ChordProtocolError(
        path,
        `Invalid field "${path}": expected ${this.hexLength} lowercase hex digits, got ${
          describe(hex)
        }`,
      );
    }
    const id = BigInt("0x" + hex);
    if (id >= this.size) {
      throw new ChordProtocolError(
        path,
        `Invalid field "${path}": id ${hex} is outside the ${this.bits}-bit space`,
      );
    }
    return id;
  }
}

/** Shortens a value for an error message. */
export function describe(value: unknown): string {
  let text: string;
  try {
    text = value === undefined ? "undefined" : String(JSON.stringify(value));
  } catch {
    text = String(value);
  }
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}
