import assert from "node:assert/strict";
import { startIoLagProbe } from "./io_lag.ts";

Deno.test("io lag: a probe byte that waits behind a blocked event loop measures the wait", async () => {
  const probe = await startIoLagProbe(60_000);
  try {
    probe.probeNow();
    // The process is busy for 300 ms: no socket read can complete meanwhile.
    const until = performance.now() + 300;
    while (performance.now() < until) { /* busy */ }
    assert.ok(probe.lag() >= 300, `lag ${probe.lag()} while the byte still waits`);
    // Once read, the round trip it took stays the measure until the next probe.
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(probe.lag() >= 300, `lag ${probe.lag()} after the byte was read`);
  } finally {
    probe.stop();
  }
});
