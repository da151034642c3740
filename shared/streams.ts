/** Reading byte streams from untrusted sources without letting them grow memory unbounded. */

import { concatBytes } from "./bytes.ts";

/**
 * All bytes of `stream`, or undefined as soon as they exceed `maxBytes` (the stream is then
 * cancelled and the rest never read).
 */
export async function readAtMost(
  stream: ReadableStream<Uint8Array>,
  maxBytes: number,
): Promise<Uint8Array<ArrayBuffer> | undefined> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      return undefined;
    }
    chunks.push(value);
  }
  return concatBytes(chunks);
}
