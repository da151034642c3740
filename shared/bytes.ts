/** Small helpers for byte arrays. */

/** One array holding `parts` one after another. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

/**
 * Takes arrays off the front of `queue` (at least one, then as many as fit in `maxBytes` in all)
 * and returns them joined: what one write sends of a queue of frames.
 */
export function takeJoined(queue: Uint8Array[], maxBytes: number): Uint8Array {
  let n = 1;
  let size = queue[0]?.byteLength ?? 0;
  while (n < queue.length && size + queue[n]!.byteLength <= maxBytes) {
    size += queue[n++]!.byteLength;
  }
  const taken = queue.splice(0, n);
  return taken.length === 1 ? taken[0]! : concatBytes(taken);
}
