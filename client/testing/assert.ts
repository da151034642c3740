/**
 * Minimal assertions for the client's unit tests (the project pins no `@std/assert`; JSR is not
 * used). Same names and meaning as std's.
 */

/** Throws unless `cond` is truthy. */
export function assert(cond: unknown, msg = "Assertion failed"): asserts cond {
  if (!cond) throw new Error(msg);
}

/** Throws unless `actual` and `expected` are deeply equal (compared as JSON). */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${msg ? msg + ": " : ""}expected ${e}, got ${a}`);
}

/**
 * Waits until `cond()` holds, polling every few ms, or throws after `timeoutMs`. The deadline is
 * generous so that a busy machine only makes a test slower, never makes it fail.
 */
export async function waitFor(
  cond: () => boolean,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
