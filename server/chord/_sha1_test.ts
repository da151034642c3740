import { deepStrictEqual } from "node:assert/strict";
import { sha1 } from "./_sha1.ts";

Deno.test("sha1 matches Web Crypto for inputs around every block boundary", async () => {
  for (let length = 0; length <= 200; length++) {
    const data = new Uint8Array(length);
    for (let i = 0; i < length; i++) data[i] = (i * 31 + length) & 0xff;
    const expected = new Uint8Array(await crypto.subtle.digest("SHA-1", data));
    deepStrictEqual(sha1(data), expected, `length ${length}`);
  }
});

Deno.test("sha1 of the empty string is the published test vector", () => {
  const hex = Array.from(sha1(new Uint8Array()), (b) => b.toString(16).padStart(2, "0")).join("");
  deepStrictEqual(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
});
