import { assert, assertEquals, waitFor } from "./testing/assert.ts";
import { isInitiator, KEEPALIVE_TEXT } from "./peer_link.ts";
import { Peers, type PeersOptions } from "./peers.ts";
import { FakeDirectNetwork } from "./testing/fakes.ts";
import type { SignalData } from "../shared/mod.ts";

Deno.test("the lexicographically smaller username initiates", () => {
  assertEquals(isInitiator("alice", "bob"), true);
  assertEquals(isInitiator("bob", "alice"), false);
  assertEquals(isInitiator("Bob", "alice"), true, "byte order: upper case sorts first");
  assertEquals(isInitiator("al", "alice"), true);
});

/** Two Peers managers whose signals go to each other through a queue. */
function pair(net = new FakeDirectNetwork(), options: PeersOptions = {}) {
  const signals: Array<{ from: string; to: string; data: SignalData }> = [];
  const managers: Record<string, Peers> = {};
  const received: string[] = [];
  const closed: string[] = [];
  for (const me of ["alice", "bob"]) {
    managers[me] = new Peers({
      me,
      createLink: net.factoryFor(me),
      sendSignal: (to, data) => {
        signals.push({ from: me, to, data });
        setTimeout(() => managers[to]!.handleSignal(me, structuredClone(data)), 0);
      },
      iceServers: () => [{ urls: ["stun:10.0.0.1:3478"] }],
    }, options);
    managers[me].events = {
      onMessage: (_remote, text) => received.push(`${me}:${text}`),
      onClose: (remote) => closed.push(`${me}-x-${remote}`),
    };
  }
  return { net, signals, received, closed, alice: managers.alice!, bob: managers.bob! };
}

Deno.test("the larger name asks the smaller one to connect instead of offering", async () => {
  const { net, signals, alice, bob } = pair();
  assertEquals(await bob.waitOpen("alice", 1000), true);
  assert(alice.isOpen("bob"));
  assertEquals(signals[0], { from: "bob", to: "alice", data: { type: "connect" } });
  assertEquals(net.created.filter((c) => c.initiator).map((c) => c.owner), ["alice"]);
  assert(bob.dcOpenedAt.alice !== undefined);
});

Deno.test("both sides asking at once still yields one open channel", async () => {
  const { alice, bob } = pair();
  alice.ensure("bob");
  bob.ensure("alice");
  await waitFor(() => alice.isOpen("bob") && bob.isOpen("alice"), "both open");
  assertEquals(alice.send("bob", "x"), true);
});

Deno.test("signals of a replaced negotiation are ignored", async () => {
  const { net, alice, bob } = pair();
  assertEquals(await alice.waitOpen("bob", 1000), true);
  const current = net.linkOf("bob", "alice")!;
  // An answer tagged with an old link id must not reach the current link.
  let touched = false;
  const original = current.signal.bind(current);
  current.signal = (d) => {
    touched = true;
    original(d);
  };
  bob.handleSignal("alice", { type: "candidate", lid: "stale-link-id" });
  assertEquals(touched, false);
});

Deno.test("an offer from the smaller name's side is refused by the smaller name", () => {
  const { net, alice } = pair();
  alice.handleSignal("bob", { type: "offer", sdp: "x", lid: "abc" });
  assertEquals(net.created.length, 0);
});

Deno.test("waitOpen gives up after its timeout when no direct path exists", async () => {
  const net = new FakeDirectNetwork();
  net.isBlocked = true;
  const { alice } = pair(net);
  assertEquals(await alice.waitOpen("bob", 30), false);
  alice.destroyAll();
});

Deno.test("links get the session's ICE servers", async () => {
  const { net, alice, bob } = pair();
  assertEquals(await alice.waitOpen("bob", 1000), true);
  assertEquals(net.iceServersUsed, [
    [{ urls: ["stun:10.0.0.1:3478"] }],
    [{ urls: ["stun:10.0.0.1:3478"] }],
  ]);
  alice.destroyAll();
  bob.destroyAll();
});

Deno.test("keep-alives keep a quiet channel open and never reach the peer protocol", async () => {
  const { net, alice, bob, received, closed } = pair(undefined, {
    keepaliveMs: 20,
    deadAfterMs: 200,
  });
  try {
    assertEquals(await alice.waitOpen("bob", 1000), true);
    await waitFor(
      () => net.sent.filter((s) => s.text === KEEPALIVE_TEXT).length >= 30,
      "keep-alives",
    );
    assert(alice.isOpen("bob") && bob.isOpen("alice"), "still open after many dead-after periods");
    assertEquals(received, []);
    assertEquals(closed, []);
  } finally {
    alice.destroyAll();
    bob.destroyAll();
  }
});

Deno.test("a channel that falls silent without closing is dropped on both sides", async () => {
  const { net, alice, bob, closed } = pair(undefined, { keepaliveMs: 20, deadAfterMs: 200 });
  try {
    assertEquals(await alice.waitOpen("bob", 1000), true);
    net.isSilent = true;
    await waitFor(() => !alice.isOpen("bob") && !bob.isOpen("alice"), "both sides to drop it");
    assertEquals(closed.sort(), ["alice-x-bob", "bob-x-alice"]);
  } finally {
    alice.destroyAll();
    bob.destroyAll();
  }
});

Deno.test("an offer of the current negotiation renegotiates the link instead of replacing it", async () => {
  const { net, signals, alice, bob } = pair();
  try {
    assertEquals(await alice.waitOpen("bob", 1000), true);
    await waitFor(() => bob.isOpen("alice"), "bob's side open");
    const lid = signals.find((s) => s.from === "alice" && s.data.type === "offer")?.data.lid;
    const link = net.linkOf("bob", "alice")!;
    const created = net.created.length;
    let seen: SignalData | undefined;
    link.signal = (d) => void (seen = d);
    // An ICE restart: a new offer tagged with the open link's id.
    bob.handleSignal("alice", { type: "offer", sdp: "restart", lid });
    assertEquals(seen, { type: "offer", sdp: "restart" });
    assertEquals(net.created.length, created, "no new link");
    assert(bob.isOpen("alice"));
  } finally {
    alice.destroyAll();
    bob.destroyAll();
  }
});
