import { assert, assertEquals, waitFor } from "./testing/assert.ts";
import { isInitiator } from "./peer_link.ts";
import { Peers } from "./peers.ts";
import { FakeDirectNetwork } from "./testing/fakes.ts";
import type { SignalData } from "../shared/mod.ts";

Deno.test("the lexicographically smaller username initiates", () => {
  assertEquals(isInitiator("alice", "bob"), true);
  assertEquals(isInitiator("bob", "alice"), false);
  assertEquals(isInitiator("Bob", "alice"), true, "byte order: upper case sorts first");
  assertEquals(isInitiator("al", "alice"), true);
});

/** Two Peers managers whose signals go to each other through a queue. */
function pair(net = new FakeDirectNetwork()) {
  const signals: Array<{ from: string; to: string; data: SignalData }> = [];
  const managers: Record<string, Peers> = {};
  for (const me of ["alice", "bob"]) {
    managers[me] = new Peers({
      me,
      createLink: net.factoryFor(me),
      sendSignal: (to, data) => {
        signals.push({ from: me, to, data });
        setTimeout(() => managers[to]!.handleSignal(me, structuredClone(data)), 0);
      },
    });
  }
  return { net, signals, alice: managers.alice!, bob: managers.bob! };
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
