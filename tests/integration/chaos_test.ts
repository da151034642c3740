/**
 * A short `deno task chaos` run (issue #16), so the property stays tested: on a real 5-server
 * ring (K = 2, W = 2) with 12 WebSocket clients writing to one another and fetching + acknowledging
 * their mailboxes, kill -9 of K + 1 servers with a restart from their disks, then one server
 * restarted from a stale copy of its data. Every acknowledged message is fetched by its
 * recipient, and none is fetched again once acknowledged. Fixed seed.
 */
import assert from "node:assert/strict";
import { formatResults, runChaos } from "../support/chaos.ts";

Deno.test("chaos: kill -9 of K + 1 and a restart from stale data lose nothing and double nothing", async () => {
  const results = await runChaos({
    seed: 16,
    scenarios: ["kill-k1-restart", "stale"],
    clients: 12,
    calmMs: 1_500,
    faultMs: 4_000,
  });
  console.log(formatResults(results));
  assert.equal(results.length, 2);
  for (const r of results) {
    assert.ok(r.acked > 0, `${r.scenario}: some writes acknowledged`);
    assert.deepEqual(r.lostIds, [], `${r.scenario}: acknowledged messages never fetched`);
    assert.deepEqual(r.duplicateIds, [], `${r.scenario}: messages fetched again after their ack`);
    assert.equal(r.lost, 0);
    assert.equal(r.duplicates, 0);
    assert.ok(r.delivered >= r.acked, `${r.scenario}: every acknowledged message delivered`);
  }
});
