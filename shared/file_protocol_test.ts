import assert from "node:assert/strict";
import {
  checkChunk,
  chunkCount,
  decryptChunk,
  encryptChunk,
  FILE_CHUNK_BYTES,
  type FileMeta,
  importFileKey,
  MAX_THUMBNAIL_CHARS,
  validateFileMeta,
} from "./file_protocol.ts";
import { parseMailboxContent, parsePeerMessage, ProtocolError } from "./mod.ts";
import { openEnvelope, seal } from "./crypto/envelope.ts";
import { testKeys } from "./crypto/test_keys.ts";
import { MAX_ENVELOPE } from "./protocol.ts";

const meta: FileMeta = {
  name: "holiday photo.jpg",
  size: 3 * FILE_CHUNK_BYTES + 1,
  mime: "image/jpeg",
  sha256: "A".repeat(43),
  key: "B".repeat(43),
  thumb: "C".repeat(MAX_THUMBNAIL_CHARS),
  thumbMime: "image/jpeg",
};

Deno.test("file metadata: valid announcements pass, bad names, sizes, types and thumbnails fail", () => {
  assert.deepEqual(validateFileMeta(structuredClone(meta)), meta);
  for (
    const bad of [
      { name: "../../etc/passwd" },
      { name: "a\u0000b" },
      { name: "" },
      { name: "x".repeat(256) },
      { size: -1 },
      { size: 1.5 },
      { size: 2 ** 31 },
      { mime: "text" },
      { mime: "text/html; charset=utf-8" },
      { sha256: "A".repeat(42) },
      { key: "!".repeat(43) },
      { thumb: "C".repeat(MAX_THUMBNAIL_CHARS + 1) },
      { thumbMime: "image/svg+xml" },
    ]
  ) {
    assert.throws(() => validateFileMeta({ ...meta, ...bad }), ProtocolError, JSON.stringify(bad));
  }
});

Deno.test("a chunk decrypts only under its file, index and key, at exactly its announced length", async () => {
  const key = await importFileKey(crypto.getRandomValues(new Uint8Array(32)));
  const other = await importFileKey(crypto.getRandomValues(new Uint8Array(32)));
  const plain = crypto.getRandomValues(new Uint8Array(1));
  const data = await encryptChunk(key, "file-0001", 3, plain);
  checkChunk(meta, 3, data); // the last chunk of meta holds 1 byte
  assert.deepEqual(await decryptChunk(key, "file-0001", 3, data), plain);
  await assert.rejects(decryptChunk(key, "file-0001", 2, data), ProtocolError);
  await assert.rejects(decryptChunk(key, "file-0002", 3, data), ProtocolError);
  await assert.rejects(decryptChunk(other, "file-0001", 3, data), ProtocolError);
  assert.throws(() => checkChunk(meta, 2, data), ProtocolError);
  assert.throws(() => checkChunk(meta, 4, data), ProtocolError);
  assert.equal(chunkCount(0), 0);
  assert.equal(chunkCount(FILE_CHUNK_BYTES), 1);
  // An encrypted chunk frame fits a mailbox entry.
  const full = await encryptChunk(key, "f".repeat(64), 95_000, new Uint8Array(FILE_CHUNK_BYTES));
  const frame = JSON.stringify({
    v: 1,
    type: "file_chunk",
    id: "f".repeat(64),
    index: 95_000,
    data: btoa(String.fromCharCode(...full)).replaceAll("+", "-").replaceAll("/", "_")
      .replaceAll("=", ""),
  });
  assert.ok(frame.length <= MAX_ENVELOPE, `${frame.length}`);
  assert.equal(parsePeerMessage(frame).type, "file_chunk");
  // A chunk is not a chat message: the mailbox parser refuses it (the client takes it first).
  assert.throws(() => parseMailboxContent(frame), ProtocolError);
});

Deno.test("a sealed message carries its file, signed; the largest one still fits a mailbox entry", async () => {
  const { alice, bob } = await testKeys();
  const message = {
    id: "msg-file-0001",
    from: "alice",
    to: "bob",
    sentAt: 1_700_000_000_000,
    text: meta.name,
    file: meta,
  };
  const envelope = await seal(
    message,
    alice.signing.privateKey,
    bob.encryption.publicKey,
    alice.encryption.publicKey,
  );
  assert.ok(JSON.stringify(envelope).length <= MAX_ENVELOPE, `${JSON.stringify(envelope).length}`);
  const opened = await openEnvelope(envelope, bob.encryption.privateKey, alice.signing.publicKey);
  assert.deepEqual(opened, message);
  // A text message stays a bare text.
  const plain = await seal(
    { ...message, file: undefined, text: '{"text":"x"}' },
    alice.signing.privateKey,
    bob.encryption.publicKey,
    alice.encryption.publicKey,
  );
  const back = await openEnvelope(plain, bob.encryption.privateKey, alice.signing.publicKey);
  assert.equal(back.text, '{"text":"x"}');
  assert.equal(back.file, undefined);
  await assert.rejects(
    seal(
      { ...message, file: { ...meta, name: "a/b" } },
      alice.signing.privateKey,
      bob.encryption.publicKey,
      alice.encryption.publicKey,
    ),
    ProtocolError,
  );
});
