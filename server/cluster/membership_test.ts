import assert from "node:assert/strict";
import type { ClusterRequest, ClusterResponse } from "../../shared/mod.ts";
import { ManualClock } from "../../shared/clock.ts";
import { Metrics, silentLog } from "../telemetry/mod.ts";
import { Membership } from "./membership.ts";

Deno.test("membership: a peer that answers is live, one silent past the timeout is dead, gossip adds peers", async () => {
  const clock = new ManualClock();
  const answering = new Set(["http://b:1", "http://c:1"]);
  const call = (address: string, _request: ClusterRequest): Promise<ClusterResponse> =>
    answering.has(address)
      ? Promise.resolve({ v: 1, type: "hello", peers: ["http://c:1"] })
      : Promise.reject(new Error(`${address} does not answer`));
  const m = new Membership({ call, metrics: new Metrics(), log: silentLog, clock }, {
    self: "http://a:1",
    seeds: ["http://b:1"],
    helloIntervalMs: 1000,
    peerTimeoutMs: 3500,
  });
  const changes: string[] = [];
  m.onPeerChange((address, alive) => changes.push(`${address}:${alive ? "up" : "down"}`));
  m.start();
  await clock.advance(0);
  assert.deepEqual(m.liveServers(), ["http://a:1", "http://b:1"]);
  await clock.advance(1000);
  assert.deepEqual(
    m.liveServers(),
    ["http://a:1", "http://b:1", "http://c:1"],
    "c learned by gossip",
  );
  answering.delete("http://b:1");
  await clock.advance(3000);
  assert.equal(m.isLive("http://b:1"), true, "within the timeout");
  await clock.advance(1000);
  assert.equal(m.isLive("http://b:1"), false);
  assert.deepEqual(changes, ["http://b:1:up", "http://c:1:up", "http://b:1:down"]);
  // A hello from b brings it back at once.
  m.receiveHello({ v: 1, type: "hello", from: "http://b:1", peers: [] });
  assert.equal(m.isLive("http://b:1"), true);
  await m.stop();
  assert.equal(clock.pendingTimers, 0);
});
