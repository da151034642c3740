/**
 * How far behind this process's socket I/O is. Under load the runtime can run its timers on time
 * while the reads of ready sockets wait their turn for seconds (requests whose senders already
 * gave up are read, frames from browsers are read late): a timer's lateness does not show it. A
 * loopback probe does: one byte written to a TCP connection to itself, timed until its read
 * completes, through the same queue as every other socket's.
 */

/** A running probe. */
export interface IoLagProbe {
  /**
   * The socket I/O lag now, in ms: the last probe's round trip, or how long the byte in flight
   * has waited, whichever is longer.
   */
  lag(): number;
  /** Sends a probe byte now (unless one is in flight). */
  probeNow(): void;
  stop(): void;
}

/** Starts probing every `periodMs` over a loopback TCP connection. */
export async function startIoLagProbe(periodMs = 500): Promise<IoLagProbe> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [writer, reader] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    listener.accept(),
  ]);
  listener.close();
  const one = new Uint8Array([1]);
  let sentAt: number | undefined;
  let last = 0;
  let stopped = false;
  const probeNow = () => {
    if (stopped || sentAt !== undefined) return;
    sentAt = performance.now();
    writer.write(one).catch(() => {});
  };
  (async () => {
    const buffer = new Uint8Array(16);
    try {
      while (!stopped) {
        const n = await reader.read(buffer);
        if (n === null) break;
        if (sentAt !== undefined) last = performance.now() - sentAt;
        sentAt = undefined;
      }
    } catch {
      // Closed at stop.
    }
  })();
  const timer = setInterval(probeNow, periodMs);
  return {
    lag: () => Math.max(last, sentAt === undefined ? 0 : performance.now() - sentAt),
    probeNow,
    stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      for (const conn of [writer, reader]) {
        try {
          conn.close();
        } catch { /* closed already */ }
      }
    },
  };
}
