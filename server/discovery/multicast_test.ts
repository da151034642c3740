import assert from "node:assert/strict";
import { Hmac } from "../cluster/mod.ts";
import { Metrics } from "../telemetry/mod.ts";
import { createAnnouncement, encodeAnnouncement } from "./announcement.ts";
import { describeDiscoveryMetrics, DROPPED_METRIC, SENT_METRIC } from "./deps.ts";
import { MulticastDiscovery } from "./multicast.ts";
import type { MulticastSocket, MulticastSocketOptions } from "./multicast_socket.ts";

/** An in-memory multicast group: every datagram sent reaches every open socket, sender included. */
class FakeGroup {
  sockets = new Set<(data: Uint8Array, from: string) => void>();
  opened: MulticastSocketOptions[] = [];

  open(options: MulticastSocketOptions): Promise<MulticastSocket> {
    this.opened.push(options);
    let handler: (data: Uint8Array, from: string) => void = () => {};
    const deliver = (data: Uint8Array, from: string) => handler(data, from);
    this.sockets.add(deliver);
    return Promise.resolve({
      send: (data) => {
        for (const s of this.sockets) s(data.slice(), options.interfaceAddress);
        return Promise.resolve();
      },
      onMessage: (h) => handler = h,
      close: () => {
        this.sockets.delete(deliver);
        return Promise.resolve();
      },
    });
  }

  /** Sends `data` as if from a foreign host. */
  inject(data: Uint8Array): void {
    for (const s of this.sockets) s(data, "10.78.0.99");
  }
}

const hmac = new Hmac("discovery-test-secret-0123");

/**
 * Waits until `done` holds (datagrams are verified asynchronously, with WebCrypto), failing after
 * a deadline generous enough for a busy machine with a message naming `what`.
 */
async function until(what: string, done: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** All datagrams `metrics` counted as dropped, whatever the reason. */
function dropped(metrics: Metrics): number {
  return ["forged", "replayed", "stale", "unsigned", "malformed"]
    .reduce((n, reason) => n + metrics.get(DROPPED_METRIC, { reason }), 0);
}

function node(group: FakeGroup, self: string, secret = hmac) {
  const metrics = new Metrics();
  describeDiscoveryMetrics(metrics);
  const found: string[] = [];
  const discovery = new MulticastDiscovery({
    signer: secret,
    metrics,
    log: () => {},
    onPeer: (a) => found.push(a),
    openSocket: (o) => group.open(o),
  }, { self, interfaceAddress: self.slice(7, -5), intervalMs: 60_000 });
  return { discovery, metrics, found };
}

Deno.test("multicast: servers hear one another but not themselves", async () => {
  const group = new FakeGroup();
  const a = node(group, "http://10.78.0.1:8000");
  const b = node(group, "http://10.78.0.2:8000");
  try {
    await a.discovery.start();
    await b.discovery.start();
    // b may or may not have been listening when a's first announcement went out (signing takes
    // no time): this one it hears for sure.
    await a.discovery.announceNow();
    await until("a and b to hear each other", () => b.found.length >= 1 && a.found.length >= 1);
    assert.ok(b.found.every((x) => x === "http://10.78.0.1:8000"), `b found ${b.found}`);
    assert.deepEqual(a.found, ["http://10.78.0.2:8000"], "a hears b, never itself");
    assert.equal(a.metrics.get(SENT_METRIC), 2);
    const { group: address, port, interfaceAddress } = group.opened[0]!;
    assert.deepEqual({ address, port, interfaceAddress }, {
      address: "239.77.77.77",
      port: 47777,
      interfaceAddress: "10.78.0.1",
    });
  } finally {
    await a.discovery.stop();
    await b.discovery.stop();
  }
});

Deno.test("multicast: a server with another secret is dropped and counted, both ways", async () => {
  const group = new FakeGroup();
  const a = node(group, "http://10.78.0.1:8000");
  const intruder = node(group, "http://10.78.0.6:8000", new Hmac("wrong-secret-0123456789"));
  try {
    await a.discovery.start();
    await intruder.discovery.start();
    await a.discovery.announceNow(); // heard by the intruder even if it missed a's first one
    await until(
      "each side to drop the other's announcement",
      () => dropped(a.metrics) >= 1 && dropped(intruder.metrics) >= 1,
    );
    assert.deepEqual(a.found, []);
    assert.deepEqual(intruder.found, []);
    assert.equal(a.metrics.get(DROPPED_METRIC, { reason: "forged" }), dropped(a.metrics));
    assert.equal(
      intruder.metrics.get(DROPPED_METRIC, { reason: "forged" }),
      dropped(intruder.metrics),
      "every drop is for the forged signature",
    );
  } finally {
    await a.discovery.stop();
    await intruder.discovery.stop();
  }
});

Deno.test("multicast: replayed, unsigned and stale datagrams are counted by reason", async () => {
  const group = new FakeGroup();
  const a = node(group, "http://10.78.0.1:8000");
  try {
    await a.discovery.start();
    const fresh = await encodeAnnouncement(
      hmac,
      createAnnouncement("http://10.78.0.3:1", Date.now()),
    );
    const stale = await encodeAnnouncement(
      hmac,
      createAnnouncement("http://10.78.0.4:1", Date.now() - 60_000),
    );
    const unsigned = new TextEncoder().encode(
      JSON.stringify(createAnnouncement("http://10.78.0.5:1", Date.now())),
    );
    for (const data of [fresh, fresh, stale, unsigned, new Uint8Array([7])]) group.inject(data);
    await until("all five datagrams to be judged", () => a.found.length + dropped(a.metrics) >= 5);
    assert.deepEqual(a.found, ["http://10.78.0.3:1"]);
    for (const reason of ["replayed", "stale", "unsigned", "malformed"]) {
      assert.equal(a.metrics.get(DROPPED_METRIC, { reason }), 1, reason);
    }
    assert.match(a.metrics.render(), /p2pchat_discovery_dropped_total\{reason="replayed"\} 1/);
  } finally {
    await a.discovery.stop();
  }
});

Deno.test("multicast: a send failure is counted and the loop carries on", async () => {
  const metrics = new Metrics();
  const logged: string[] = [];
  const discovery = new MulticastDiscovery({
    signer: hmac,
    metrics,
    log: (event) => logged.push(event),
    onPeer: () => {},
    openSocket: () =>
      Promise.resolve({
        send: () => Promise.reject(new Error("ENETUNREACH")),
        onMessage: () => {},
        close: () => Promise.resolve(),
      }),
  }, { self: "http://10.78.0.1:1", interfaceAddress: "10.78.0.1", intervalMs: 60_000 });
  await discovery.start();
  await discovery.announceNow();
  await discovery.stop();
  assert.equal(metrics.get("p2pchat_discovery_errors_total", { mode: "multicast" }), 2);
  assert.ok(logged.includes("discovery_announce_failed"));
});
