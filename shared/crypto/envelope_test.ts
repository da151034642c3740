import assert from "node:assert/strict";
import { ProtocolError } from "../validate.ts";
import { fromBase64Url, toBase64Url } from "./encoding.ts";
import {
  type Envelope,
  NotForMeError,
  openEnvelope,
  parseEnvelope,
  type PlainMessage,
  seal,
  TamperedEnvelopeError,
} from "./envelope.ts";
import { testKeys } from "./test_keys.ts";

const { alice, bob, eve } = await testKeys();

const message: PlainMessage = {
  id: "msg-0001-abcdef",
  from: "alice",
  to: "bob",
  sentAt: 1_700_000_000_123,
  text: "hello bob — ça va? 👋",
};

const sealed = await seal(
  message,
  alice.signing.privateKey,
  bob.encryption.publicKey,
  alice.encryption.publicKey,
);

/** Flips one bit of byte `index` of a base64url field. */
function flip(b64: string, index: number): string {
  const bytes = fromBase64Url(b64);
  bytes[index % bytes.length]! ^= 0x01;
  return toBase64Url(bytes);
}

async function assertTampered(envelope: Envelope, what: string) {
  await assert.rejects(
    openEnvelope(envelope, bob.encryption.privateKey, alice.signing.publicKey),
    TamperedEnvelopeError,
    what,
  );
}

Deno.test("an envelope opens for the recipient and for the sender", async () => {
  assert.deepEqual(
    await openEnvelope(sealed, bob.encryption.privateKey, alice.signing.publicKey),
    message,
  );
  assert.deepEqual(
    await openEnvelope(sealed, alice.encryption.privateKey, alice.signing.publicKey),
    message,
  );
});

Deno.test("an envelope does not open for a third party", async () => {
  await assert.rejects(
    openEnvelope(sealed, eve.encryption.privateKey, alice.signing.publicKey),
    NotForMeError,
  );
});

Deno.test("the envelope carries no plaintext and a fresh key and IV per message", async () => {
  assert.ok(!JSON.stringify(sealed).includes("hello"));
  const again = await seal(
    message,
    alice.signing.privateKey,
    bob.encryption.publicKey,
    alice.encryption.publicKey,
  );
  assert.notEqual(again.iv, sealed.iv);
  assert.notEqual(again.ciphertext, sealed.ciphertext);
  assert.notEqual(again.keys.to, sealed.keys.to);
});

Deno.test("an envelope survives JSON and parseEnvelope unchanged", () => {
  assert.deepEqual(parseEnvelope(JSON.parse(JSON.stringify(sealed))), sealed);
});

Deno.test("flipping any byte of iv, ciphertext, signature or a wrapped key is detected", async () => {
  const cases: Array<[string, Envelope]> = [];
  for (const field of ["iv", "ciphertext", "signature"] as const) {
    const length = fromBase64Url(sealed[field]).length;
    for (let i = 0; i < length; i++) {
      cases.push([`${field}[${i}]`, { ...sealed, [field]: flip(sealed[field], i) }]);
    }
  }
  for (const which of ["to", "from"] as const) {
    const length = fromBase64Url(sealed.keys[which]).length;
    for (let i = 0; i < length; i++) {
      cases.push([
        `keys.${which}[${i}]`,
        { ...sealed, keys: { ...sealed.keys, [which]: flip(sealed.keys[which], i) } },
      ]);
    }
  }
  assert.ok(cases.length > 1_100);
  await Promise.all(cases.map(([what, e]) => assertTampered(e, what)));
});

Deno.test("changing from, to, id or sentAt is detected", async () => {
  await Promise.all([
    assertTampered({ ...sealed, from: "mallory" }, "from"),
    assertTampered({ ...sealed, to: "carol" }, "to"),
    assertTampered({ ...sealed, id: "msg-0002-abcdef" }, "id"),
    assertTampered({ ...sealed, sentAt: sealed.sentAt + 1 }, "sentAt"),
    assertTampered({ ...sealed, keys: { to: sealed.keys.from, from: sealed.keys.to } }, "swap"),
  ]);
});

Deno.test("a message signed by someone else is rejected", async () => {
  // eve claims to be alice: the signature is valid, but for eve's key, not alice's.
  const forged = await seal(
    message,
    eve.signing.privateKey,
    bob.encryption.publicKey,
    eve.encryption.publicKey,
  );
  assert.ok(await openEnvelope(forged, bob.encryption.privateKey, eve.signing.publicKey));
  await assert.rejects(
    openEnvelope(forged, bob.encryption.privateKey, alice.signing.publicKey),
    TamperedEnvelopeError,
  );
  // eve re-signs alice's real envelope: still rejected.
  const { signature: _s, ...rest } = sealed;
  const { signedBytes } = await import("./envelope.ts");
  const resigned = toBase64Url(
    await crypto.subtle.sign(
      { name: "RSA-PSS", saltLength: 32 },
      eve.signing.privateKey,
      signedBytes(rest),
    ),
  );
  await assertTampered({ ...sealed, signature: resigned }, "re-signed by eve");
});

Deno.test("a malformed envelope is a ProtocolError, not a tampering", () => {
  const bad: unknown[] = [
    null,
    "{}",
    { ...sealed, v: 2 },
    { ...sealed, id: "x" },
    { ...sealed, from: "not a name" },
    { ...sealed, sentAt: -1 },
    { ...sealed, sentAt: 1.5 },
    { ...sealed, iv: sealed.iv + "AA" },
    { ...sealed, ciphertext: "!!!" + sealed.ciphertext },
    { ...sealed, ciphertext: "A".repeat(20_000) },
    { ...sealed, keys: null },
    { ...sealed, keys: { to: sealed.keys.to } },
    { ...sealed, signature: 42 },
  ];
  for (const value of bad) {
    assert.throws(() => parseEnvelope(value), ProtocolError, JSON.stringify(value).slice(0, 80));
  }
  assert.ok(!(new TamperedEnvelopeError("x") instanceof ProtocolError));
});

Deno.test("seal refuses a message that could not be parsed back", async () => {
  await assert.rejects(
    seal(
      { ...message, text: "" },
      alice.signing.privateKey,
      bob.encryption.publicKey,
      alice.encryption.publicKey,
    ),
    ProtocolError,
  );
});
