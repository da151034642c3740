/**
 * Randomness as the ring sees it: a {@link Random} is passed in, so simulations replay from a seed.
 */

/** A source of uniform random numbers. */
export interface Random {
  /** Returns a number in `[0, 1)`. */
  next(): number;
}

/** `Math.random`, for servers. */
export const systemRandom: Random = { next: () => Math.random() };

/**
 * A fast seeded generator (mulberry32): the same seed gives the same sequence on every run.
 *
 * @example
 * ```ts
 * const random = seededRandom(42);
 * randomInt(random, 10); // always the same first value for seed 42
 * ```
 */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  return {
    next(): number {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    },
  };
}

/** Returns an integer in `[0, below)`. */
export function randomInt(random: Random, below: number): number {
  return Math.floor(random.next() * below);
}

/** Returns a uniformly random `bits`-bit bigint. */
export function randomBigInt(random: Random, bits: number): bigint {
  let value = 0n;
  for (let left = bits; left > 0; left -= 16) {
    const take = Math.min(16, left);
    value = (value << BigInt(take)) | BigInt(randomInt(random, 1 << take));
  }
  return value;
}

/** Returns one element of a non-empty array. */
export function pick<T>(random: Random, items: readonly T[]): T {
  if (items.length === 0) throw new RangeError("Cannot pick from an empty list");
  return items[randomInt(random, items.length)]!;
}

/** Shuffles `items` in place (Fisher–Yates) and returns it. */
export function shuffle<T>(random: Random, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = randomInt(random, i + 1);
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}
