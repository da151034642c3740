import { assert, assertEquals } from "./testing/assert.ts";
import {
  acceptPending,
  handoverTrust,
  keyIdOf,
  MAX_HANDOVER_TRUST_CHARS,
  mergePins,
  observeDirectory,
  parseHandoverTrust,
  type PinRecord,
  safetyNumber,
  StaleAcceptError,
  trustStatus,
} from "./trust.ts";
import { ProtocolError } from "../shared/mod.ts";

const BOB = { encryption: "bob-encryption", signing: "bob-signing" };
const EVE = { encryption: "eve-encryption", signing: "eve-signing" };
const bob = { keys: BOB, keyId: await keyIdOf(BOB) };
const eve = { keys: EVE, keyId: await keyIdOf(EVE) };

function throws(fn: () => unknown, type: new (...args: never[]) => Error): void {
  try {
    fn();
  } catch (err) {
    assert(err instanceof type, `threw ${(err as Error).name}`);
    return;
  }
  throw new Error("did not throw");
}

Deno.test("trust: the first keys seen are pinned; none seen means the contact cannot be written to", () => {
  assertEquals(observeDirectory(null, "bob", null, 1), { pin: null, isUpdated: false });
  assertEquals(trustStatus(null), "no_keys");
  const { pin, isUpdated } = observeDirectory(null, "bob", bob, 1);
  assert(isUpdated && pin);
  assertEquals([pin.keyId, pin.keys, pin.pending, trustStatus(pin)], [
    bob.keyId,
    BOB,
    null,
    "trusted",
  ]);
  assertEquals(observeDirectory(pin, "bob", bob, 2), { pin, isUpdated: false }, "same keys");
});

Deno.test("trust: other keys, or none, for a pinned contact are a change that blocks until accepted", () => {
  const pinned = observeDirectory(null, "bob", bob, 1).pin!;
  const missing = observeDirectory(pinned, "bob", null, 2).pin!;
  assertEquals([trustStatus(missing), missing.pending?.keyId], ["changed", null]);
  assertEquals(missing.keyId, bob.keyId, "the pin stays");
  // "No keys" cannot be accepted: there is nothing to seal for.
  throws(() => acceptPending(missing, bob.keyId, 3), StaleAcceptError);
  const changed = observeDirectory(missing, "bob", eve, 3).pin!;
  assertEquals([changed.pending?.keyId, changed.events.map((e) => e.kind)], [
    eve.keyId,
    ["missing", "changed"],
  ]);
  // The same answer again changes nothing; accepting other keys than those shown fails.
  assertEquals(observeDirectory(changed, "bob", eve, 4).isUpdated, false);
  throws(() => acceptPending(changed, bob.keyId, 4), StaleAcceptError);
  const accepted = acceptPending(changed, eve.keyId, 5);
  assertEquals([accepted.keyId, accepted.keys, accepted.pending, trustStatus(accepted)], [
    eve.keyId,
    EVE,
    null,
    "trusted",
  ]);
  assertEquals(accepted.events.map((e) => [e.kind, e.at]), [
    ["missing", 2],
    ["changed", 3],
    ["accepted", 5],
  ]);
});

Deno.test("trust: the directory answering the pinned keys again ends the change, leaving a marker", () => {
  const pinned = observeDirectory(null, "bob", bob, 1).pin!;
  const changed = observeDirectory(pinned, "bob", eve, 2).pin!;
  const back = observeDirectory(changed, "bob", bob, 3).pin!;
  assertEquals([trustStatus(back), back.events.map((e) => e.kind)], [
    "trusted",
    ["changed", "restored"],
  ]);
});

Deno.test("trust: the safety number is the same on both sides and changes with either key", async () => {
  const a = await safetyNumber("alice", eve.keyId, "bob", bob.keyId);
  const b = await safetyNumber("bob", bob.keyId, "alice", eve.keyId);
  assertEquals(a, b);
  assert(/^(\d{5} ){5}\d{5}$/.test(a.digits), a.digits);
  assertEquals(a.qrText, `p2pchat-safety:1:${a.digits.replaceAll(" ", "")}`);
  const other = await safetyNumber("alice", eve.keyId, "bob", eve.keyId);
  assert(other.digits !== a.digits && other.qrText !== a.qrText);
});

Deno.test("trust: a hand-over carries ids and changes; merging keeps the older pin and any pending change", () => {
  const pinned = observeDirectory(null, "bob", bob, 10).pin!;
  const changed = observeDirectory(pinned, "bob", eve, 20).pin!;
  const [carried] = parseHandoverTrust(JSON.parse(handoverTrust([changed])), "alice");
  assert(carried);
  assertEquals([carried.keyId, carried.keys, carried.pending?.keyId, carried.pending?.keys], [
    bob.keyId,
    null,
    eve.keyId,
    null,
  ]);
  // The new device pinned (on first use there) the keys a lying server gave it.
  const local = observeDirectory(null, "bob", eve, 30).pin!;
  const merged = mergePins(local, carried);
  assertEquals([merged.keyId, merged.pending?.keyId, trustStatus(merged)], [
    bob.keyId,
    eve.keyId,
    "changed",
  ]);
  // Same pin on both sides: the pending change of either one stays.
  const mergedSame = mergePins(observeDirectory(null, "bob", bob, 40).pin!, carried);
  assertEquals([mergedSame.keyId, mergedSame.keys, mergedSame.pending?.keyId], [
    bob.keyId,
    BOB,
    eve.keyId,
  ]);
  assertEquals(mergedSame.events, changed.events);
  assertEquals(mergePins(null, carried), carried);
});

Deno.test("trust: the hand-over form is bounded and checked", async () => {
  const many: PinRecord[] = [];
  for (let i = 0; i < 2_000; i++) {
    many.push({
      contact: `user${i}`,
      keyId: bob.keyId,
      keys: BOB,
      pinnedAt: i,
      pending: i === 1_999 ? { keyId: eve.keyId, keys: EVE, seenAt: i } : null,
      events: [],
    });
  }
  const text = handoverTrust(many);
  assert(text.length <= MAX_HANDOVER_TRUST_CHARS, `${text.length} characters`);
  const parsed = parseHandoverTrust(JSON.parse(text), "alice");
  assertEquals(parsed[0]?.contact, "user1999", "a pending change is kept first");
  for (
    const bad of [
      [{ contact: "alice", keyId: bob.keyId, pinnedAt: 1 }],
      [{ contact: "bob", keyId: "short", pinnedAt: 1 }],
      [{ contact: "bob", keyId: bob.keyId, pinnedAt: 1, events: [{ at: 1, kind: "eaten" }] }],
      { contact: "bob" },
    ]
  ) {
    throws(() => parseHandoverTrust(bad, "alice"), ProtocolError);
  }
  assertEquals(await keyIdOf(BOB), bob.keyId);
});
