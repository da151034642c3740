import assert from "node:assert/strict";
import { fromBase64Url, fromUtf8, lengthPrefixed, toBase64Url, utf8 } from "./encoding.ts";

Deno.test("base64url round-trips every length and byte value, without padding", () => {
  for (let n = 0; n < 70; n++) {
    const bytes = new Uint8Array(n).map((_, i) => (i * 37 + n) & 0xff);
    const text = toBase64Url(bytes);
    assert.match(text, /^[A-Za-z0-9_-]*$/);
    assert.deepEqual(fromBase64Url(text), bytes);
  }
  assert.equal(toBase64Url(new Uint8Array([0xfb, 0xff])), "-_8");
  assert.throws(() => fromBase64Url("a+b/"), TypeError);
  assert.throws(() => fromBase64Url("abcde"), TypeError);
});

Deno.test("UTF-8 round-trips and rejects invalid bytes", () => {
  assert.equal(fromUtf8(utf8("héllo 👋")), "héllo 👋");
  assert.throws(() => fromUtf8(new Uint8Array([0xff])), TypeError);
});

Deno.test("length-prefixed encoding is unambiguous", () => {
  assert.notDeepEqual(lengthPrefixed(["ab", "c"]), lengthPrefixed(["a", "bc"]));
  assert.deepEqual(lengthPrefixed(["a"]), new Uint8Array([0, 0, 0, 1, 97]));
});
