import assert from "node:assert/strict";
import { fromBase64Url, toBase64Url } from "../../shared/crypto/encoding.ts";
import { Hmac } from "./hmac.ts";

const SECRET = "a-test-cluster-secret-of-some-length";
const enc = new TextEncoder();

/** The signature Web Crypto gives (what servers of the previous version send and expect). */
async function webCryptoSignature(secret: string, text: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    enc.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return toBase64Url(new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(text))));
}

Deno.test("hmac: signatures are Web Crypto's HMAC-SHA-256, byte for byte, and verify", async () => {
  const hmac = new Hmac(SECRET);
  for (const text of ["", "p2p-chat request 2\nPOST\nhttp://a\n", "é ∑ 😀".repeat(300)]) {
    const sig = await hmac.sign(text);
    assert.equal(sig, await webCryptoSignature(SECRET, text));
    assert.equal(await hmac.verify(text, sig), true);
  }
});

Deno.test("hmac: a signature of other text, another secret, altered or malformed is refused", async () => {
  const hmac = new Hmac(SECRET);
  const sig = await hmac.sign("body");
  assert.equal(await hmac.verify("body!", sig), false);
  assert.equal(
    await hmac.verify("body", await webCryptoSignature("another-secret", "body")),
    false,
  );
  const altered = fromBase64Url(sig);
  altered[0] = altered[0]! ^ 1;
  assert.equal(await hmac.verify("body", toBase64Url(altered)), false);
  assert.equal(await hmac.verify("body", sig.slice(0, 20)), false);
  assert.equal(await hmac.verify("body", "not base64url!"), false);
  assert.equal(await hmac.verify("body", ""), false);
});
