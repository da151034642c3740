/**
 * Waiting in tests that cross process boundaries: for a condition, with a deadline generous
 * enough for a slow, busy machine (never a fixed sleep used as synchronization), or — where
 * "nothing happens for a while" is the behaviour under test — for a span in which a condition
 * must keep holding, checked throughout.
 */

/**
 * How long {@link waitFor} waits unless told otherwise: long enough for a machine twice as slow
 * as a developer's, with every core busy (`deno task test:stress`).
 */
export const DEFAULT_WAIT_MS = 30_000;

/**
 * Polls `check` until it returns a truthy value (which it resolves with) or `timeoutMs` passes.
 * A `check` that throws counts as "not yet"; the last error is part of the timeout message,
 * which names `what` was awaited.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs = DEFAULT_WAIT_MS,
  intervalMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (true) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
      last = undefined;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last}` : ""}`);
}

/**
 * Checks `check` every `intervalMs` for `forMs` and fails as soon as it does not hold: for the
 * behaviours that are "nothing happens for a while" (no reconnect loop, no intruder in the
 * ring). A slow machine only makes this check see fewer samples, never fail spuriously.
 */
export async function holdsFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  forMs: number,
  intervalMs = 100,
): Promise<void> {
  const end = Date.now() + forMs;
  while (true) {
    if (!await check()) throw new Error(`No longer true: ${what}`);
    if (Date.now() >= end) return;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
