import assert from "node:assert/strict";
import {
  type ErrorCode,
  parseLiveFrame,
  parseMailboxContent,
  ProtocolError,
  sealedFrameText,
} from "./mod.ts";
import { seal } from "./crypto/mod.ts";
import { testKeys } from "./crypto/test_keys.ts";

async function envelope() {
  const { alice, bob } = await testKeys();
  return await seal(
    { id: "message-0001", from: "alice", to: "bob", sentAt: 5, text: "hi" },
    alice.signing.privateKey,
    bob.encryption.publicKey,
    alice.encryption.publicKey,
  );
}

function rejects(parse: (t: unknown) => unknown, input: unknown, code: ErrorCode, path: string) {
  assert.throws(() => parse(input), (err) => {
    assert.ok(err instanceof ProtocolError, `expected ProtocolError, got ${err}`);
    assert.equal(err.code, code);
    assert.equal(err.path, path);
    return true;
  });
}

Deno.test("a sealed frame round-trips through its text and parser", async () => {
  const env = await envelope();
  assert.deepEqual(parseLiveFrame(sealedFrameText(env)), { v: 1, type: "sealed", envelope: env });
});

Deno.test("live frames: plain peer messages parse as peer messages", () => {
  assert.deepEqual(parseLiveFrame('{"v":1,"type":"ack","id":"message-0001"}'), {
    v: 1,
    type: "ack",
    id: "message-0001",
  });
});

Deno.test("live frames: bad input is a ProtocolError naming the field", async () => {
  const env = await envelope();
  rejects(parseLiveFrame, "{not json", "bad_json", "");
  rejects(parseLiveFrame, new Uint8Array(3), "bad_json", "");
  rejects(parseLiveFrame, "x".repeat(70_000), "frame_too_large", "");
  rejects(parseLiveFrame, "[]", "bad_frame", "frame");
  rejects(
    parseLiveFrame,
    JSON.stringify({ v: 2, type: "sealed", envelope: env }),
    "unsupported_version",
    "v",
  );
  rejects(
    parseLiveFrame,
    JSON.stringify({ v: 1, type: "sealed", envelope: { ...env, id: "x" } }),
    "bad_frame",
    "envelope.id",
  );
  rejects(
    parseLiveFrame,
    JSON.stringify({ v: 1, type: "sealed", envelope: { ...env, keys: { to: 1, from: "" } } }),
    "bad_frame",
    "envelope.keys.to",
  );
  rejects(parseLiveFrame, '{"v":1,"type":"bogus"}', "unknown_type", "type");
});

Deno.test("mailbox content: an envelope or a plaintext chat message, nothing else", async () => {
  const env = await envelope();
  assert.deepEqual(parseMailboxContent(JSON.stringify(env)), {
    v: 1,
    type: "sealed",
    envelope: env,
  });
  const chat = {
    v: 1,
    type: "chat",
    id: "message-0002",
    from: "a1b",
    to: "bob",
    sentAt: 1,
    text: "x",
  };
  assert.deepEqual(parseMailboxContent(JSON.stringify(chat)), chat);
  rejects(
    parseMailboxContent,
    '{"v":1,"type":"ack","id":"message-0001"}',
    "unknown_type",
    "type",
  );
  rejects(parseMailboxContent, JSON.stringify({ ...env, sentAt: -1 }), "bad_frame", "sentAt");
  rejects(parseMailboxContent, "{not json", "bad_json", "");
});
