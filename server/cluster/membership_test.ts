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

Deno.test("membership: a frozen peer (hellos never answered) is suspect after the hello timeout, dead after the peer timeout", async () => {
  const clock = new ManualClock();
  let frozen = false;
  const hanging: Array<(r: ClusterResponse) => void> = [];
  const call = (_address: string, _request: ClusterRequest): Promise<ClusterResponse> =>
    frozen
      ? new Promise((resolve) => hanging.push(resolve))
      : Promise.resolve({ v: 1, type: "hello", peers: [] });
  const metrics = new Metrics();
  const m = new Membership({ call, metrics, log: silentLog, clock }, {
    self: "http://a:1",
    seeds: ["http://b:1"],
    helloIntervalMs: 500,
    helloTimeoutMs: 1000,
    peerTimeoutMs: 2500,
  });
  const changes: string[] = [];
  m.onPeerChange((address, alive) => changes.push(`${address}:${alive ? "up" : "down"}`));
  m.start();
  await clock.advance(0);
  assert.equal(m.isLive("http://b:1"), true);
  await clock.advance(500); // last answer at +500
  frozen = true;
  await clock.advance(500); // a hello in flight, not yet late
  assert.deepEqual(m.suspectServers(), []);
  await clock.advance(1000); // that hello is late: suspect, still live
  assert.deepEqual(m.suspectServers(), ["http://b:1"]);
  assert.equal(m.isSuspect("http://b:1"), true);
  assert.equal(m.isLive("http://b:1"), true);
  assert.match(metrics.render(), /p2pchat_cluster_peers_suspect 1/);
  await clock.advance(1000); // silent 2.5 s: not yet dead
  assert.equal(m.isLive("http://b:1"), true);
  await clock.advance(500);
  assert.equal(m.isLive("http://b:1"), false, "dead once silent past the peer timeout");
  assert.deepEqual(m.suspectServers(), [], "dead is not suspect");
  // It resumes: the late answers arrive and the next hello is answered.
  frozen = false;
  for (const resolve of hanging.splice(0)) resolve({ v: 1, type: "hello", peers: [] });
  await clock.advance(500);
  assert.equal(m.isLive("http://b:1"), true);
  assert.equal(m.isSuspect("http://b:1"), false);
  assert.deepEqual(changes, ["http://b:1:up", "http://b:1:down", "http://b:1:up"]);
  await m.stop();
  assert.equal(clock.pendingTimers, 0);
});

Deno.test("membership: a server that was itself paused does not declare its answering peers dead", async () => {
  const clock = new ManualClock();
  // The server's own view of time: a pause (SIGSTOP, a stalled event loop) shows as a jump.
  let paused = 0;
  const ownClock = {
    now: () => clock.now() + paused,
    setTimeout: clock.setTimeout.bind(clock),
    clearTimeout: clock.clearTimeout.bind(clock),
    setInterval: clock.setInterval.bind(clock),
    clearInterval: clock.clearInterval.bind(clock),
  };
  let answering = true;
  const call = (_address: string, _request: ClusterRequest): Promise<ClusterResponse> =>
    answering
      ? Promise.resolve({ v: 1, type: "hello", peers: [] })
      : Promise.reject(new Error("no answer"));
  const logged: string[] = [];
  const m = new Membership({
    call,
    metrics: new Metrics(),
    log: (event) => logged.push(event),
    clock: ownClock,
  }, {
    self: "http://a:1",
    seeds: ["http://b:1", "http://c:1"],
    helloIntervalMs: 500,
    helloTimeoutMs: 1000,
    peerTimeoutMs: 2500,
  });
  const changes: string[] = [];
  m.onPeerChange((address, alive) => changes.push(`${address}:${alive ? "up" : "down"}`));
  m.start();
  await clock.advance(1000);
  assert.deepEqual(m.liveServers(), ["http://a:1", "http://b:1", "http://c:1"]);
  paused += 10_000; // frozen for 10 s, then the next round runs
  await clock.advance(500);
  assert.deepEqual(changes, ["http://b:1:up", "http://c:1:up"], "no peer declared dead");
  assert.deepEqual(m.liveServers(), ["http://a:1", "http://b:1", "http://c:1"]);
  assert.ok(logged.includes("paused"));
  // A peer that really stopped answering meanwhile is still declared dead, a peer timeout later.
  answering = false;
  await clock.advance(3500);
  assert.equal(m.isLive("http://b:1"), false);
  await m.stop();
  assert.equal(clock.pendingTimers, 0);
});

Deno.test("membership: browsers get the live servers' browser URLs (told in hellos both ways), one entry per shared address", async () => {
  const clock = new ManualClock();
  const sent: ClusterRequest[] = [];
  const call = (address: string, request: ClusterRequest): Promise<ClusterResponse> => {
    sent.push(request);
    return Promise.resolve(
      address === "http://b:1"
        ? { v: 1, type: "hello", peers: [], browserUrl: "https://chat.example" }
        : { v: 1, type: "hello", peers: [] },
    );
  };
  const m = new Membership({ call, metrics: new Metrics(), log: silentLog, clock }, {
    self: "http://a:1",
    browserUrl: "https://chat.example",
    seeds: ["http://b:1", "http://c:1"],
    helloIntervalMs: 1000,
  });
  m.start();
  await clock.advance(0);
  // a and b are behind one name; c announced none, so browsers reach it at its address.
  assert.deepEqual(m.liveBrowserUrls(), ["http://c:1", "https://chat.example"]);
  assert.ok(sent.every((r) => r.type === "hello" && r.browserUrl === "https://chat.example"));
  // d says hello with its own browser URL, and the answer carries ours.
  const answer = m.receiveHello({
    v: 1,
    type: "hello",
    from: "http://d:1",
    peers: [],
    browserUrl: "http://localhost:8004",
  });
  assert.equal(answer.type === "hello" && answer.browserUrl, "https://chat.example");
  assert.deepEqual(m.liveBrowserUrls(), [
    "http://c:1",
    "http://localhost:8004",
    "https://chat.example",
  ]);
  assert.deepEqual(m.knownBrowserUrls(), m.liveBrowserUrls());
  await m.stop();
});
