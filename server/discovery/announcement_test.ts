import assert from "node:assert/strict";
import { Hmac } from "../cluster/mod.ts";
import {
  AnnouncementError,
  createAnnouncement,
  encodeAnnouncement,
  MAX_ANNOUNCEMENT_BYTES,
  parseAnnouncement,
  signingText,
} from "./announcement.ts";

const hmac = new Hmac("discovery-test-secret-0123");
const bytes = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

Deno.test("announcement: an encoded announcement parses back with its signature", async () => {
  const a = createAnnouncement("http://10.78.0.1:8000", 1_700_000_000_000, "node-1");
  const { announcement, sig } = parseAnnouncement(await encodeAnnouncement(hmac, a));
  assert.deepEqual(announcement, a);
  assert.ok(sig && await hmac.verify(signingText(a), sig));
});

Deno.test("announcement: nonces are fresh for every announcement", () => {
  const nonces = new Set(
    Array.from({ length: 100 }, () => createAnnouncement("http://a:1", 1).nonce),
  );
  assert.equal(nonces.size, 100);
});

Deno.test("announcement: the signed text covers every field", () => {
  const a = createAnnouncement("http://10.78.0.1:8000", 1000, "n");
  for (
    const changed of [
      { ...a, address: "http://10.78.0.2:8000" },
      { ...a, time: 1001 },
      { ...a, nonce: "0".repeat(32) },
      { ...a, nodeId: "m" },
    ]
  ) assert.notEqual(signingText(changed), signingText(a));
});

Deno.test("announcement: malformed datagrams are errors naming the field", () => {
  const good = {
    v: 1,
    type: "announce",
    address: "http://10.0.0.1:8000",
    time: 5,
    nonce: "a".repeat(32),
  };
  const cases: [unknown, RegExp][] = [
    [[1, 2], /must be a JSON object/],
    [{ ...good, v: 2 }, /announce\.v must be 1/],
    [{ ...good, type: "hello" }, /announce\.type/],
    [{ ...good, address: "ftp://x" }, /announce\.address must be a base URL/],
    [{ ...good, address: "http://x/path" }, /announce\.address/],
    [{ ...good, time: -1 }, /announce\.time/],
    [{ ...good, time: "5" }, /announce\.time/],
    [{ ...good, nonce: "short" }, /announce\.nonce/],
    [{ ...good, nodeId: "" }, /announce\.nodeId/],
    [{ ...good, sig: 7 }, /announce\.sig/],
  ];
  for (const [value, message] of cases) {
    assert.throws(() => parseAnnouncement(bytes(value)), (err) => {
      return err instanceof AnnouncementError && message.test(err.message);
    });
  }
  assert.throws(() => parseAnnouncement(new Uint8Array([0xff, 0xfe])), /not UTF-8 JSON/);
  assert.throws(
    () => parseAnnouncement(new Uint8Array(MAX_ANNOUNCEMENT_BYTES + 1)),
    /more than 1024/,
  );
  assert.equal(parseAnnouncement(bytes(good)).sig, undefined);
});
