import assert from "node:assert/strict";
import { ProtocolError } from "../validate.ts";
import { deriveCredentials, newSalt } from "./derive.ts";
import { fromBase64Url, toBase64Url } from "./encoding.ts";
import {
  exportPublicKey,
  fingerprint,
  importPublicKey,
  KeyUnwrapError,
  parseWrappedPrivateKey,
  rewrapPrivateKey,
  RSA_MODULUS_BITS,
  unwrapPrivateKey,
  wrapPrivateKey,
} from "./keys.ts";
import { testKeys } from "./test_keys.ts";

const SALT = newSalt();
const [keys, right, wrong] = await Promise.all([
  testKeys(),
  deriveCredentials("alice-password", SALT),
  deriveCredentials("not-alice-password", SALT),
]);
const alice = keys.alice;

Deno.test("generated keys are 3072-bit RSA-OAEP and RSA-PSS with SHA-256", () => {
  for (
    const [pair, name] of [[alice.encryption, "RSA-OAEP"], [alice.signing, "RSA-PSS"]] as const
  ) {
    const alg = pair.publicKey.algorithm as RsaHashedKeyAlgorithm;
    assert.equal(alg.name, name);
    assert.equal(alg.modulusLength, RSA_MODULUS_BITS);
    assert.equal(RSA_MODULUS_BITS, 3072);
    assert.equal((alg.hash as KeyAlgorithm).name, "SHA-256");
  }
});

Deno.test("public keys export as SPKI base64url and import back", async () => {
  const spki = await exportPublicKey(alice.encryption.publicKey);
  assert.match(spki, /^[A-Za-z0-9_-]+$/);
  const back = await importPublicKey(spki, "RSA-OAEP");
  assert.equal(await exportPublicKey(back), spki);
  await assert.rejects(importPublicKey("AAAA", "RSA-PSS"), ProtocolError);
  await assert.rejects(exportPublicKey(alice.signing.privateKey), TypeError);
});

Deno.test("private keys wrap and unwrap with the wrapping key, into non-extractable keys", async () => {
  for (const pair of [alice.encryption, alice.signing]) {
    const record = await wrapPrivateKey(pair.privateKey, right.wrappingKey);
    // Serializable, and validated when read back.
    const stored = parseWrappedPrivateKey(JSON.parse(JSON.stringify(record)));
    assert.deepEqual(stored, record);
    const key = await unwrapPrivateKey(stored, right.wrappingKey);
    assert.equal(key.extractable, false);
    assert.equal(key.type, "private");
    assert.equal(key.algorithm.name, pair.privateKey.algorithm.name);
  }
  // The unwrapped keys work: decrypt what the public key encrypted, sign what it verifies.
  const [dec, sig] = await Promise.all([
    wrapPrivateKey(alice.encryption.privateKey, right.wrappingKey).then((r) =>
      unwrapPrivateKey(r, right.wrappingKey)
    ),
    wrapPrivateKey(alice.signing.privateKey, right.wrappingKey).then((r) =>
      unwrapPrivateKey(r, right.wrappingKey)
    ),
  ]);
  const data = new Uint8Array([1, 2, 3]);
  const ct = await crypto.subtle.encrypt({ name: "RSA-OAEP" }, alice.encryption.publicKey, data);
  assert.deepEqual(
    new Uint8Array(await crypto.subtle.decrypt({ name: "RSA-OAEP" }, dec, ct)),
    data,
  );
  const pss = { name: "RSA-PSS", saltLength: 32 };
  const s = await crypto.subtle.sign(pss, sig, data);
  assert.ok(await crypto.subtle.verify(pss, alice.signing.publicKey, s, data));
});

Deno.test("wrapping uses a fresh IV, and the record has no key material in clear", async () => {
  const a = await wrapPrivateKey(alice.signing.privateKey, right.wrappingKey);
  const b = await wrapPrivateKey(alice.signing.privateKey, right.wrappingKey);
  assert.notEqual(a.iv, b.iv);
  assert.notEqual(a.data, b.data);
  const pkcs8 = toBase64Url(await crypto.subtle.exportKey("pkcs8", alice.signing.privateKey));
  assert.ok(!JSON.stringify(a).includes(pkcs8.slice(100, 140)));
});

Deno.test("a wrong password, an altered record or a swapped algorithm cannot unwrap", async () => {
  const record = await wrapPrivateKey(alice.encryption.privateKey, right.wrappingKey);
  await assert.rejects(unwrapPrivateKey(record, wrong.wrappingKey), KeyUnwrapError);
  const data = fromBase64Url(record.data);
  data[10]! ^= 1;
  await assert.rejects(
    unwrapPrivateKey({ ...record, data: toBase64Url(data) }, right.wrappingKey),
    KeyUnwrapError,
  );
  await assert.rejects(
    unwrapPrivateKey({ ...record, alg: "RSA-PSS" }, right.wrappingKey),
    KeyUnwrapError,
  );
});

Deno.test("a malformed wrapped key record is a ProtocolError", () => {
  for (
    const bad of [null, {}, { v: 2 }, {
      v: 1,
      alg: "AES",
      iv: "A".repeat(16),
      data: "A".repeat(20),
    }, {
      v: 1,
      alg: "RSA-PSS",
      iv: "short",
      data: "A".repeat(20),
    }, { v: 1, alg: "RSA-PSS", iv: "A".repeat(16), data: "not base64!" + "A".repeat(20) }]
  ) {
    assert.throws(() => parseWrappedPrivateKey(bad), ProtocolError);
  }
});

Deno.test("fingerprints are 16 groups of 4 hex digits, stable per key, distinct across keys", async () => {
  const f = await fingerprint(alice.signing.publicKey);
  assert.match(f, /^([0-9A-F]{4} ){15}[0-9A-F]{4}$/);
  assert.equal(await fingerprint(await exportPublicKey(alice.signing.publicKey)), f);
  assert.notEqual(await fingerprint(keys.bob.signing.publicKey), f);
});

Deno.test("a private key wrapped again with a new key opens with it and no longer with the old", async () => {
  const record = await wrapPrivateKey(alice.signing.privateKey, right.wrappingKey);
  const again = await rewrapPrivateKey(record, right.wrappingKey, wrong.wrappingKey);
  const key = await unwrapPrivateKey(again, wrong.wrappingKey);
  assert.equal(key.extractable, false);
  assert.equal(key.algorithm.name, "RSA-PSS");
  await assert.rejects(unwrapPrivateKey(again, right.wrappingKey), KeyUnwrapError);
  await assert.rejects(
    rewrapPrivateKey(record, wrong.wrappingKey, right.wrappingKey),
    KeyUnwrapError,
  );
});
