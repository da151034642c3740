import assert from "node:assert/strict";
import { Hmac } from "../cluster/mod.ts";
import { createAnnouncement, encodeAnnouncement } from "./announcement.ts";
import { AnnouncementVerifier } from "./verifier.ts";

const SECRET = "discovery-test-secret-0123";
const hmac = new Hmac(SECRET);

function verifierAt(clock: { now: number }) {
  return new AnnouncementVerifier({ signer: hmac, now: () => clock.now }, { maxSkewMs: 30_000 });
}

Deno.test("verifier: accepts a fresh signed announcement once, then calls it a replay", async () => {
  const clock = { now: 1_000_000 };
  const v = verifierAt(clock);
  const data = await encodeAnnouncement(hmac, createAnnouncement("http://10.78.0.1:1", clock.now));
  const first = await v.verify(data);
  assert.ok(first.ok);
  assert.equal(first.announcement.address, "http://10.78.0.1:1");
  clock.now += 5_000;
  const again = await v.verify(data);
  assert.deepEqual(again.ok ? "accepted" : again.reason, "replayed");
});

Deno.test("verifier: drops unsigned, forged, stale and malformed announcements", async () => {
  const clock = { now: 1_000_000 };
  const v = verifierAt(clock);
  const a = createAnnouncement("http://10.78.0.1:1", clock.now);
  const unsigned = new TextEncoder().encode(JSON.stringify(a));
  const wrongKey = await encodeAnnouncement(new Hmac("another-secret-0123456"), a);
  const tampered = new TextEncoder().encode(
    new TextDecoder().decode(await encodeAnnouncement(hmac, a)).replace("10.78.0.1", "10.78.0.9"),
  );
  const old = await encodeAnnouncement(hmac, createAnnouncement("http://a:1", clock.now - 31_000));
  const future = await encodeAnnouncement(
    hmac,
    createAnnouncement("http://a:1", clock.now + 31_000),
  );
  const reasons = [];
  for (const data of [unsigned, wrongKey, tampered, old, future, new Uint8Array([1, 2, 3])]) {
    const verdict = await v.verify(data);
    reasons.push(verdict.ok ? "accepted" : verdict.reason);
  }
  assert.deepEqual(reasons, ["unsigned", "forged", "forged", "stale", "stale", "malformed"]);
});

Deno.test("verifier: a replay after the window is stale, not accepted", async () => {
  const clock = { now: 1_000_000 };
  const v = verifierAt(clock);
  const data = await encodeAnnouncement(hmac, createAnnouncement("http://a:1", clock.now));
  assert.ok((await v.verify(data)).ok);
  clock.now += 30_001;
  const late = await v.verify(data);
  assert.equal(late.ok ? "accepted" : late.reason, "stale");
});

Deno.test("verifier: forged announcements take no room in the replay window", async () => {
  const clock = { now: 1_000_000 };
  const v = verifierAt(clock);
  const a = createAnnouncement("http://a:1", clock.now);
  const forged = await encodeAnnouncement(new Hmac("another-secret-0123456"), a);
  assert.equal((await v.verify(forged)).ok, false);
  assert.ok((await v.verify(await encodeAnnouncement(hmac, a))).ok, "the genuine one still passes");
});
