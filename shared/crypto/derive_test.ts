import assert from "node:assert/strict";
import {
  deriveCredentials,
  legacySalt,
  newSalt,
  normalizeUsername,
  PBKDF2_ITERATIONS,
  usernameSalt,
} from "./derive.ts";
import { fromBase64Url, toBase64Url, utf8 } from "./encoding.ts";

const ALICE_SALT = newSalt();
const [alice1, alice2, bob, aliceOtherPassword] = await Promise.all([
  deriveCredentials("correct horse battery", ALICE_SALT),
  deriveCredentials("correct horse battery", ALICE_SALT),
  deriveCredentials("correct horse battery", newSalt()),
  deriveCredentials("correct horse battery!", ALICE_SALT),
]);

Deno.test("the auth secret is deterministic per (password, salt)", () => {
  assert.equal(alice1.authSecret, alice2.authSecret);
  assert.match(alice1.authSecret, /^[A-Za-z0-9_-]{43}$/);
});

Deno.test("new salts are 16 random bytes; a salt shorter than that is refused", async () => {
  const salts = new Set(Array.from({ length: 100 }, newSalt));
  assert.equal(salts.size, 100);
  for (const salt of salts) assert.equal(fromBase64Url(salt).length, 16);
  await assert.rejects(deriveCredentials("correct horse battery", "c2hvcnQ"), TypeError);
});

Deno.test("the auth secret differs across salts and passwords, and is not the password", () => {
  assert.notEqual(alice1.authSecret, bob.authSecret);
  assert.notEqual(alice1.authSecret, aliceOtherPassword.authSecret);
  assert.ok(!alice1.authSecret.includes("horse"));
});

Deno.test("usernames are salted trimmed and NFC-normalized, case preserved", async () => {
  assert.equal(normalizeUsername("  alice\n"), "alice");
  assert.equal(normalizeUsername("e\u0301"), "\u00e9");
  assert.notDeepEqual(await usernameSalt("alice"), await usernameSalt("Alice"));
  const expected = await crypto.subtle.digest("SHA-256", utf8("p2p-chat:alice"));
  assert.deepEqual(await usernameSalt(" alice"), new Uint8Array(expected));
  assert.equal(await legacySalt(" alice"), toBase64Url(expected));
});

Deno.test("the auth secret is PBKDF2(600,000) then HKDF, as documented", async () => {
  assert.equal(PBKDF2_ITERATIONS, 600_000);
  const salt = fromBase64Url(ALICE_SALT);
  const pw = await crypto.subtle.importKey("raw", utf8("correct horse battery"), "PBKDF2", false, [
    "deriveBits",
  ]);
  const master = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations: 600_000 },
    pw,
    256,
  );
  const hkdf = await crypto.subtle.importKey("raw", master, "HKDF", false, ["deriveBits"]);
  const auth = await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt, info: utf8("p2p-chat auth secret v1") },
    hkdf,
    256,
  );
  assert.equal(alice1.authSecret, toBase64Url(auth));
});

Deno.test("the wrapping key is a non-extractable AES-256-GCM key, same for the same inputs", async () => {
  const key = alice1.wrappingKey;
  assert.equal(key.extractable, false);
  assert.deepEqual(key.algorithm, { name: "AES-GCM", length: 256 });
  assert.deepEqual([...key.usages].sort(), ["unwrapKey", "wrapKey"]);
  await assert.rejects(crypto.subtle.exportKey("raw", key));
  // Same inputs, same key: what one wraps, the other unwraps.
  const secret = await crypto.subtle.generateKey({ name: "AES-GCM", length: 128 }, true, [
    "encrypt",
  ]);
  const iv = new Uint8Array(12);
  const wrapped = await crypto.subtle.wrapKey("raw", secret, alice1.wrappingKey, {
    name: "AES-GCM",
    iv,
  });
  await crypto.subtle.unwrapKey(
    "raw",
    wrapped,
    alice2.wrappingKey,
    { name: "AES-GCM", iv },
    {
      name: "AES-GCM",
    },
    false,
    ["encrypt"],
  );
  await assert.rejects(
    crypto.subtle.unwrapKey(
      "raw",
      wrapped,
      bob.wrappingKey,
      { name: "AES-GCM", iv },
      {
        name: "AES-GCM",
      },
      false,
      ["encrypt"],
    ),
  );
});
