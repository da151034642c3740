import assert from "node:assert/strict";
import {
  acceptKey,
  CLOSE,
  closePayload,
  type DecodedFrame,
  encodeFragment,
  encodeFrame,
  encodeHeader,
  FrameDecoder,
  isValidKey,
  OP,
  WsCloseError,
} from "./ws_frames.ts";
import { concatBytes } from "./bytes.ts";

const MASK = new Uint8Array([0x37, 0xfa, 0x21, 0x3d]);
const text = (s: string) => new TextEncoder().encode(s);

function decode(bytes: Uint8Array, max = 1024, chunk = bytes.length): DecodedFrame[] {
  const decoder = new FrameDecoder({ maxMessageBytes: max });
  const out: DecodedFrame[] = [];
  for (let at = 0; at < bytes.length; at += chunk) {
    out.push(...decoder.push(bytes.subarray(at, at + chunk)));
  }
  return out;
}

function closesWith(code: number, run: () => unknown): void {
  assert.throws(run, (err) => err instanceof WsCloseError && err.code === code);
}

Deno.test("ws frames: the handshake key is RFC 6455's example", async () => {
  // RFC 6455 §1.3.
  assert.equal(await acceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  assert.ok(isValidKey("dGhlIHNhbXBsZSBub25jZQ=="));
  assert.ok(!isValidKey("dGhlIHNhbXBsZQ=="), "10 bytes");
  assert.ok(!isValidKey(""));
});

Deno.test("ws frames: a masked text frame decodes, byte by byte too", () => {
  const frame = encodeFrame(OP.text, text("héllo ✓"), MASK);
  assert.deepEqual(decode(frame), [{ type: "message", data: "héllo ✓" }]);
  assert.deepEqual(decode(frame, 1024, 1), [{ type: "message", data: "héllo ✓" }]);
  // Two frames in one chunk.
  assert.deepEqual(
    decode(concatBytes([frame, encodeFrame(OP.binary, new Uint8Array([1, 2]), MASK)])),
    [
      { type: "message", data: "héllo ✓" },
      { type: "message", data: new Uint8Array([1, 2]) },
    ],
  );
  assert.deepEqual(decode(encodeFrame(OP.text, new Uint8Array(0), MASK)), [
    { type: "message", data: "" },
  ]);
});

Deno.test("ws frames: 7-, 16- and 64-bit lengths round-trip at their boundaries", () => {
  for (const length of [0, 125, 126, 65535, 65536, 70_000]) {
    const payload = new Uint8Array(length).map((_, i) => i % 251);
    const frame = encodeFrame(OP.binary, payload, MASK);
    const headerLength = length < 126 ? 6 : length < 65536 ? 8 : 14;
    assert.equal(frame.length, headerLength + length, `length ${length}`);
    const [out] = decode(frame, 100_000, 4096);
    assert.deepEqual(out, { type: "message", data: payload }, `length ${length}`);
  }
  // Server frames are unmasked: 2 + 8 header bytes for a 64-bit length.
  const server = encodeFrame(OP.text, new Uint8Array(70_000));
  assert.equal(server[1], 127);
  assert.equal(server.length, 10 + 70_000);
});

Deno.test("ws frames: a fragmented message is joined, with control frames in between", () => {
  const bytes = concatBytes([
    encodeFragment(OP.text, text("hel"), false, MASK),
    encodeFrame(OP.ping, text("p"), MASK),
    encodeFragment(OP.continuation, text("lo "), false, MASK),
    encodeFragment(OP.continuation, text("✓"), true, MASK),
  ]);
  assert.deepEqual(decode(bytes, 1024, 3), [
    { type: "ping", payload: text("p") },
    { type: "message", data: "hello ✓" },
  ]);
});

Deno.test("ws frames: a frame announcing more than the cap is refused from its header", () => {
  // Only the 14 header bytes of a 60 MiB frame: refused before any payload arrives.
  const decoder = new FrameDecoder({ maxMessageBytes: 1024 });
  closesWith(
    CLOSE.tooBig,
    () => decoder.push(encodeHeader(OP.binary, 60 * 1024 * 1024, true, MASK)),
  );
  // Exactly the cap passes; one byte more does not.
  assert.equal(decode(encodeFrame(OP.text, new Uint8Array(1024).fill(0x61), MASK)).length, 1);
  closesWith(CLOSE.tooBig, () => decode(encodeFrame(OP.text, new Uint8Array(1025), MASK)));
  // A 2^63-ish length (top bit clear) is refused the same way, never allocated.
  closesWith(
    CLOSE.tooBig,
    () => decode(encodeHeader(OP.text, Number.MAX_SAFE_INTEGER, true, MASK)),
  );
  // A length with the top bit set is a protocol error.
  const bad = encodeHeader(OP.text, 65536, true, MASK);
  bad[2] = 0x80;
  closesWith(CLOSE.protocolError, () => decode(bad));
});

Deno.test("ws frames: the cap applies to the running total of a fragmented message", () => {
  const decoder = new FrameDecoder({ maxMessageBytes: 1000 });
  const part = new Uint8Array(300);
  decoder.push(encodeFragment(OP.binary, part, false, MASK));
  decoder.push(encodeFragment(OP.continuation, part, false, MASK));
  decoder.push(encodeFragment(OP.continuation, part, false, MASK));
  // 900 so far; the next fragment's header announces 300 more: refused.
  closesWith(CLOSE.tooBig, () => decoder.push(encodeHeader(OP.continuation, 300, false, MASK)));
  // And the decoder refuses everything after.
  closesWith(CLOSE.protocolError, () => decoder.push(encodeFrame(OP.ping, part.subarray(0, 1))));
  // A fresh message after a finished one starts from zero.
  const again = new FrameDecoder({ maxMessageBytes: 1000 });
  for (let i = 0; i < 5; i++) {
    assert.equal(again.push(encodeFrame(OP.binary, part, MASK)).length, 1);
  }
});

Deno.test("ws frames: protocol violations close with 1002, bad UTF-8 with 1007", () => {
  const unmasked = encodeFrame(OP.text, text("hi"));
  closesWith(CLOSE.protocolError, () => decode(unmasked));
  const reserved = encodeFrame(OP.text, text("hi"), MASK);
  reserved[0]! |= 0x40;
  closesWith(CLOSE.protocolError, () => decode(reserved));
  closesWith(CLOSE.protocolError, () => decode(encodeFrame(0x3, text("x"), MASK)));
  closesWith(CLOSE.protocolError, () => decode(encodeFrame(0xb, text("x"), MASK)));
  closesWith(CLOSE.protocolError, () => decode(encodeFrame(OP.continuation, text("x"), MASK)));
  closesWith(CLOSE.protocolError, () =>
    decode(concatBytes([
      encodeFragment(OP.text, text("a"), false, MASK),
      encodeFrame(OP.text, text("b"), MASK),
    ])));
  closesWith(CLOSE.protocolError, () => decode(encodeFragment(OP.ping, text("x"), false, MASK)));
  closesWith(CLOSE.protocolError, () => decode(encodeFrame(OP.ping, new Uint8Array(126), MASK)));
  closesWith(CLOSE.protocolError, () => decode(encodeFrame(OP.close, new Uint8Array(1), MASK)));
  closesWith(
    CLOSE.protocolError,
    () => decode(encodeFrame(OP.close, closePayload(1005, ""), MASK)),
  );
  closesWith(CLOSE.invalidData, () => decode(encodeFrame(OP.text, new Uint8Array([0xc3]), MASK)));
  closesWith(
    CLOSE.invalidData,
    () => decode(encodeFrame(OP.text, new Uint8Array([0xed, 0xa0, 0x80]), MASK)),
  );
  // Split UTF-8 across fragments is fine.
  const check = text("✓");
  assert.deepEqual(
    decode(concatBytes([
      encodeFragment(OP.text, check.subarray(0, 1), false, MASK),
      encodeFragment(OP.continuation, check.subarray(1), true, MASK),
    ])),
    [{ type: "message", data: "✓" }],
  );
});

Deno.test("ws frames: close frames carry a code and a reason cut to fit", () => {
  assert.deepEqual(decode(encodeFrame(OP.close, closePayload(4000, "bye"), MASK)), [
    { type: "close", code: 4000, reason: "bye" },
  ]);
  assert.deepEqual(decode(encodeFrame(OP.close, new Uint8Array(0), MASK)), [
    { type: "close", reason: "" },
  ]);
  const long = closePayload(1009, "✓".repeat(100));
  assert.ok(long.length <= 125);
  // Cut at a character boundary: still valid UTF-8.
  const [out] = decode(encodeFrame(OP.close, long, MASK));
  assert.equal(out?.type, "close");
});
