import assert from "node:assert/strict";
import type { ClusterRequest, ClusterResponse } from "../../shared/mod.ts";
import { ManualClock } from "../../shared/clock.ts";
import { Metrics, silentLog } from "../telemetry/mod.ts";
import { Membership } from "./membership.ts";
import { PeerUnreachableError } from "./rpc.ts";

/**
 * This server's own view of time over the test's clock: `lag(ms)` makes it jump ahead (a pause,
 * SIGSTOP or a stalled event loop, shows as a jump), while timers still run on the test's clock.
 */
function laggingClock(clock: ManualClock): { clock: ManualClock; lag(ms: number): void } {
  let lagged = 0;
  const own = {
    now: () => clock.now() + lagged,
    setTimeout: clock.setTimeout.bind(clock),
    clearTimeout: clock.clearTimeout.bind(clock),
    setInterval: clock.setInterval.bind(clock),
    clearInterval: clock.clearInterval.bind(clock),
  };
  return { clock: own as unknown as ManualClock, lag: (ms) => lagged += ms };
}

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
  const own = laggingClock(clock);
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
    clock: own.clock,
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
  own.lag(10_000); // frozen for 10 s, then the next round runs
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

/** A membership of "http://a:1" on `clock` with seeds b (and c), logging into `logged`. */
function member(
  clock: ManualClock,
  call: (address: string, request: ClusterRequest) => Promise<ClusterResponse>,
  options: Partial<ConstructorParameters<typeof Membership>[1]> = {},
) {
  const logged: { event: string; fields?: Record<string, unknown> }[] = [];
  const m = new Membership({
    call,
    metrics: new Metrics(),
    log: (event, fields) => logged.push({ event, fields }),
    clock: clock as ManualClock,
  }, {
    self: "http://a:1",
    seeds: ["http://b:1"],
    helloIntervalMs: 500,
    helloTimeoutMs: 1000,
    peerTimeoutMs: 2500,
    ...options,
  });
  const changes: string[] = [];
  m.onPeerChange((address, alive) => changes.push(`${address}:${alive ? "up" : "down"}`));
  return { m, logged, changes };
}

const HELLO: ClusterResponse = { v: 1, type: "hello", peers: [] };

Deno.test("membership: a busy peer whose hellos are answered late (after the hello timeout) is suspect but never declared dead", async () => {
  const clock = new ManualClock();
  let delayMs = 0;
  const call = (): Promise<ClusterResponse> =>
    new Promise((resolve) => clock.setTimeout(() => resolve(HELLO), delayMs));
  const { m, changes } = member(clock, call);
  m.start();
  await clock.advance(0);
  assert.equal(m.isLive("http://b:1"), true);
  delayMs = 1800; // every answer now comes 0.8 s after the hello timeout
  let suspected = false;
  for (let t = 0; t < 20_000; t += 100) {
    await clock.advance(100);
    suspected ||= m.isSuspect("http://b:1");
  }
  assert.ok(suspected, "a hello unanswered within the hello timeout makes it suspect");
  assert.deepEqual(changes, ["http://b:1:up"], "its late answers keep it alive");
  delayMs = 0;
  await clock.advance(2000);
  assert.equal(m.isSuspect("http://b:1"), false, "an answer in time clears the suspicion");
  await m.stop();
});

Deno.test("membership: any sign of life (an authenticated request, a signed answer) postpones death, but neither revives nor clears a suspicion", async () => {
  const clock = new ManualClock();
  let answering = true;
  const call = (): Promise<ClusterResponse> =>
    answering ? Promise.resolve(HELLO) : new Promise(() => {}); // hellos hang once it is busy
  const { m, changes } = member(clock, call);
  m.start();
  await clock.advance(0);
  answering = false;
  for (let t = 0; t < 10_000; t += 500) {
    await clock.advance(500);
    m.heardFrom("http://b:1"); // e.g. its replication requests keep coming
  }
  assert.equal(m.isLive("http://b:1"), true, "heard from every 0.5 s: alive");
  assert.equal(m.isSuspect("http://b:1"), true, "its hellos still go unanswered: suspect");
  await clock.advance(3000);
  assert.equal(m.isLive("http://b:1"), false, "no sign of life for the peer timeout: dead");
  m.heardFrom("http://b:1");
  assert.equal(m.isLive("http://b:1"), false, "only a hello brings a dead peer back");
  m.heardFrom("http://nobody:1");
  assert.deepEqual(m.knownServers(), ["http://a:1", "http://b:1"], "unknown senders are not added");
  assert.deepEqual(changes, ["http://b:1:up", "http://b:1:down"]);
  await m.stop();
  assert.equal(clock.pendingTimers, 0);
});

Deno.test("membership: a peer declared dead and heard again soon gets a longer timeout, which decays back", async () => {
  const clock = new ManualClock();
  let answering = true;
  const waiting: Array<(r: ClusterResponse) => void> = [];
  const call = (): Promise<ClusterResponse> =>
    answering ? Promise.resolve(HELLO) : new Promise((resolve) => waiting.push(resolve));
  const { m, changes, logged } = member(clock, call, {
    flapWindowMs: 30_000,
    flapDecayMs: 60_000,
  });
  m.start();
  await clock.advance(0);
  /** It stops answering for `ms`, then answers what it was asked meanwhile. */
  const stall = async (ms: number) => {
    answering = false;
    await clock.advance(ms);
    answering = true;
    for (const resolve of waiting.splice(0)) resolve(HELLO);
    await clock.advance(1000);
  };
  await stall(4000); // a 4 s stall: declared dead, then back within the flap window
  assert.deepEqual(changes, ["http://b:1:up", "http://b:1:down", "http://b:1:up"]);
  assert.equal(m.peerTimeoutOf("http://b:1"), 5000);
  assert.ok(logged.some((l) => l.event === "peer_up" && l.fields?.flapping === true));
  await stall(4000); // the same stall again: tolerated now
  assert.equal(changes.length, 3, "not declared dead for a stall shorter than its timeout");
  await stall(6000); // longer still: dead again, and the timeout doubles again
  assert.equal(changes.length, 5);
  assert.equal(m.peerTimeoutOf("http://b:1"), 10_000);
  await stall(12_000); // capped at 4 × the base timeout
  assert.equal(m.peerTimeoutOf("http://b:1"), 10_000);
  await clock.advance(60_000);
  assert.equal(m.peerTimeoutOf("http://b:1"), 5000, "halved after a calm minute");
  await clock.advance(60_000);
  assert.equal(m.peerTimeoutOf("http://b:1"), 2500, "back to the base timeout");
  changes.length = 0;
  await stall(4000);
  assert.deepEqual(changes, ["http://b:1:down", "http://b:1:up"], "a stall is noticed again");
  await m.stop();
});

Deno.test("membership: a refused connection (nothing listening) is declared dead at the base timeout even when the timeout grew", async () => {
  const clock = new ManualClock();
  let state: "up" | "hang" | "refuse" = "up";
  const call = (address: string): Promise<ClusterResponse> =>
    state === "up"
      ? Promise.resolve(HELLO)
      : state === "hang"
      ? new Promise(() => {})
      : Promise.reject(new PeerUnreachableError(address, "connection refused", "unreachable"));
  const { m, changes } = member(clock, call);
  m.start();
  await clock.advance(0);
  state = "hang";
  await clock.advance(4000);
  state = "up";
  await clock.advance(3000);
  assert.equal(m.peerTimeoutOf("http://b:1"), 5000, "it flapped");
  state = "refuse"; // killed
  await clock.advance(3500);
  assert.deepEqual(changes, [
    "http://b:1:up",
    "http://b:1:down",
    "http://b:1:up",
    "http://b:1:down",
  ]);
  await m.stop();
});

Deno.test("membership: while this server's own rounds run late, its peers' silence is not counted against them", async () => {
  const clock = new ManualClock();
  const own = laggingClock(clock);
  // Answers come 0.7 s after each hello, while this server lags 1.5 s before each round (less
  // than the peer timeout: not a pause), so on its own clock answers are up to 3.8 s apart.
  const call = (): Promise<ClusterResponse> =>
    new Promise((resolve) => clock.setTimeout(() => resolve(HELLO), 700));
  const { m, changes, logged } = member(own.clock, call);
  m.start();
  await clock.advance(700);
  for (let i = 0; i < 10; i++) {
    own.lag(1500);
    await clock.advance(500);
  }
  assert.deepEqual(changes, ["http://b:1:up"], "no peer declared dead for this server's lag");
  assert.ok(!logged.some((l) => l.event === "paused"));
  await m.stop();
  assert.equal(clock.pendingTimers, 0);
});

Deno.test("membership: a hello deadline that fires late because this server lagged waits for the answer already there", async () => {
  const clock = new ManualClock();
  const own = laggingClock(clock);
  let delayMs = 0;
  const call = (): Promise<ClusterResponse> =>
    new Promise((resolve) => clock.setTimeout(() => resolve(HELLO), delayMs));
  const { m, logged } = member(own.clock, call, {
    helloIntervalMs: 10_000,
    peerTimeoutMs: 20_000,
  });
  m.start();
  await clock.advance(0);
  assert.equal(m.isLive("http://b:1"), true);
  delayMs = 1000; // the answer arrives exactly when the deadline fires…
  await clock.advance(10_000); // …a round sends the hello
  own.lag(1500); // …and this server stalls 1.5 s meanwhile: the deadline's timer fires late
  await clock.advance(1000);
  await clock.advance(200);
  assert.equal(m.isSuspect("http://b:1"), false);
  assert.ok(!logged.some((l) => l.event === "peer_suspect"), "never suspected");
  // Without a lag, the same deadline makes it suspect (the answer comes after it).
  delayMs = 1000;
  await clock.advance(8800);
  await clock.advance(1000);
  assert.ok(logged.some((l) => l.event === "peer_suspect"));
  await m.stop();
});

Deno.test("membership: a peer not alive for the forget time is forgotten (seeds kept), and gossip does not bring it back; its own hello does", async () => {
  const clock = new ManualClock();
  const down = new Set(["http://b:1", "http://old:1"]);
  const call = (address: string): Promise<ClusterResponse> =>
    down.has(address)
      ? Promise.reject(new PeerUnreachableError(address, "connection refused", "unreachable"))
      : Promise.resolve({ v: 1, type: "hello", peers: ["http://old:1"] });
  const { m, logged } = member(clock, call, {
    seeds: ["http://b:1", "http://c:1"],
    helloIntervalMs: 1000,
    forgetAfterMs: 60_000,
  });
  m.start();
  await clock.advance(0);
  assert.deepEqual(m.knownServers(), ["http://a:1", "http://b:1", "http://c:1", "http://old:1"]);
  await clock.advance(59_000);
  assert.ok(m.knownServers().includes("http://old:1"), "not yet");
  await clock.advance(2000);
  assert.deepEqual(
    m.knownServers(),
    ["http://a:1", "http://b:1", "http://c:1"],
    "old forgotten, seed b kept",
  );
  assert.ok(logged.some((l) => l.event === "peer_forgotten" && l.fields?.peer === "http://old:1"));
  // c keeps listing it in its answers, and d in its hello: not taken back.
  await clock.advance(5000);
  m.receiveHello({ v: 1, type: "hello", from: "http://d:1", peers: ["http://old:1"] });
  assert.ok(!m.knownServers().includes("http://old:1"));
  // A peer that was alive, then went away, is forgotten the same way (counted from its death).
  down.add("http://d:1");
  await clock.advance(3000);
  assert.ok(m.knownServers().includes("http://d:1"));
  assert.equal(m.isLive("http://d:1"), false);
  await clock.advance(61_000);
  assert.ok(!m.knownServers().includes("http://d:1"));
  // It says hello itself: back, and alive.
  down.delete("http://old:1");
  m.receiveHello({ v: 1, type: "hello", from: "http://old:1", peers: [] });
  assert.equal(m.isLive("http://old:1"), true);
  await m.stop();
});

Deno.test("membership: the ring routes around a suspect peer while another peer answers, not when every live peer is suspect at once", async () => {
  const clock = new ManualClock();
  const hanging = new Set<string>();
  const call = (address: string): Promise<ClusterResponse> =>
    hanging.has(address) ? new Promise(() => {}) : Promise.resolve(HELLO);
  const { m } = member(clock, call, {
    seeds: ["http://b:1", "http://c:1"],
    peerTimeoutMs: 10_000,
  });
  m.start();
  await clock.advance(0);
  hanging.add("http://b:1");
  await clock.advance(2000);
  assert.equal(m.isSuspect("http://b:1"), true);
  assert.equal(m.shouldRouteAround("http://b:1"), true, "c still answers: b is the odd one");
  assert.equal(m.shouldRouteAround("http://c:1"), false);
  hanging.add("http://c:1"); // now nobody answers: more likely this server's own trouble
  await clock.advance(1500);
  assert.deepEqual(m.suspectServers(), ["http://b:1", "http://c:1"]);
  assert.equal(m.shouldRouteAround("http://b:1"), false);
  assert.equal(m.shouldRouteAround("http://c:1"), false);
  await m.stop();
});
