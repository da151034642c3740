/**
 * The encrypted, signed form of one batch of history rows that a superseded device hands to the
 * user's new device (DESIGN §4), and the new device's signed acknowledgement.
 *
 * The construction is the envelope's (`envelope.ts`): a fresh AES-256-GCM key per batch encrypts
 * the rows (the clear header is the additional data), the key is wrapped with the user's own
 * RSA-OAEP public key, and the user's RSA-PSS key signs a length-prefixed encoding of the header,
 * IV, ciphertext and wrapped key. Both devices hold the same keys after login, so a server that
 * tampers with the WebRTC negotiation in the signaling path can neither read a batch nor forge
 * one. Its own domain string keeps a batch from passing for a chat envelope and back; the
 * receiver's `nonce` in every header binds the batches to one transfer, so old ones cannot be
 * replayed into another.
 *
 * Version 2 compresses the payload (`deflate-raw`, CompressionStream) before sealing: chat rows
 * are repetitive JSON and shrink several times, so one sealed batch under 64 KiB carries many
 * more rows, and each RSA operation (one wrap, one signature per batch) covers more of them. The
 * opener bounds what it inflates ({@link MAX_BATCH_PLAIN_BYTES}), so a small batch cannot expand
 * into an unbounded one.
 */
import { readAtMost } from "../streams.ts";
import { ProtocolError, readBoolean, readNumber, readObject, readString } from "../validate.ts";
import { USERNAME_PATTERN } from "../username.ts";
import { TamperedEnvelopeError } from "./envelope.ts";
import {
  BASE64URL_PATTERN,
  fromBase64Url,
  fromUtf8,
  lengthPrefixed,
  toBase64Url,
  utf8,
} from "./encoding.ts";
import {
  decryptObject,
  encryptForReaders,
  sign,
  unwrapObjectKey,
  verifySignature,
} from "./hybrid.ts";

/** What identifies a batch within a hand-over; signed and authenticated in clear. */
export interface BatchHeader {
  /** The user handing his history to himself. */
  owner: string;
  /** The receiving device's random nonce for this transfer (base64url). */
  nonce: string;
  /** Position of the batch in the transfer, from 0. */
  seq: number;
  /** Rows in the whole transfer. */
  total: number;
  /** Whether this is the transfer's last batch. */
  final: boolean;
}

/** A sealed batch; binary fields are base64url. */
export interface SealedBatch extends BatchHeader {
  v: 2;
  /** 12-byte AES-GCM IV. */
  iv: string;
  /** AES-256-GCM ciphertext of the deflate-raw compressed UTF-8 payload, tag included. */
  ciphertext: string;
  /** The batch key wrapped with the owner's RSA-OAEP public key. */
  key: string;
  /** RSA-PSS signature by the owner. */
  signature: string;
}

/**
 * Largest compressed payload of one batch, in bytes, so a sealed batch (base64url, with its
 * header, key and signature) stays under 64 KiB.
 */
export const MAX_BATCH_PAYLOAD_BYTES = 44 * 1024;

/** Largest payload of one batch before compression (and after inflating), in UTF-8 bytes. */
export const MAX_BATCH_PLAIN_BYTES = 2 * 1024 * 1024;

/** The payload does not fit one batch once compressed: the sender should split it. */
export class BatchTooLargeError extends RangeError {
  /** Compressed size in bytes (0 when the plain payload alone is over the bound). */
  readonly compressedBytes: number;

  /** Describes a payload of `plainBytes` that compressed to `compressedBytes`. */
  constructor(plainBytes: number, compressedBytes: number) {
    super(
      `Batch of ${plainBytes} bytes (${compressedBytes} compressed) is larger than ` +
        `${MAX_BATCH_PAYLOAD_BYTES} bytes compressed or ${MAX_BATCH_PLAIN_BYTES} plain: split it`,
    );
    this.name = "BatchTooLargeError";
    this.compressedBytes = compressedBytes;
  }
}

const VERSION = 2;
const DOMAIN = "p2p-chat handover batch v2 deflate-raw";
const ACK_DOMAIN = "p2p-chat handover ack v1";
const NONCE_RULE = { pattern: /^[A-Za-z0-9_-]{16,64}$/, max: 64 };
const RSA_RULE = { pattern: BASE64URL_PATTERN, min: 16, max: 683 };
const MAX_CIPHERTEXT_CHARS = Math.ceil(((MAX_BATCH_PAYLOAD_BYTES + 16) * 4) / 3);
const MAX_ROWS = 1e9;

function header(h: BatchHeader): Uint8Array<ArrayBuffer> {
  return lengthPrefixed([
    DOMAIN,
    h.owner,
    h.nonce,
    String(h.seq),
    String(h.total),
    h.final ? "final" : "more",
  ]);
}

function signedBytes(b: Omit<SealedBatch, "v" | "signature">): Uint8Array<ArrayBuffer> {
  return lengthPrefixed([
    header(b),
    fromBase64Url(b.iv),
    fromBase64Url(b.ciphertext),
    fromBase64Url(b.key),
  ]);
}

async function deflate(bytes: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Inflates `bytes`, refusing to produce more than `max` bytes. */
async function inflate(bytes: Uint8Array<ArrayBuffer>, max: number): Promise<Uint8Array> {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
  const out = await readAtMost(stream, max);
  if (!out) throw new RangeError(`Inflates to more than ${max} bytes`);
  return out;
}

/**
 * Compresses `payload` (at most {@link MAX_BATCH_PLAIN_BYTES} bytes of UTF-8), encrypts it for
 * the owner and signs it. `ownEncryptionKey` is the owner's RSA-OAEP public key, `ownSigningKey`
 * his RSA-PSS private key. Throws {@link BatchTooLargeError} when the compressed payload is over
 * {@link MAX_BATCH_PAYLOAD_BYTES}.
 */
export async function sealBatch(
  head: BatchHeader,
  payload: string,
  ownSigningKey: CryptoKey,
  ownEncryptionKey: CryptoKey,
): Promise<SealedBatch> {
  const plain = utf8(payload);
  if (plain.length > MAX_BATCH_PLAIN_BYTES) throw new BatchTooLargeError(plain.length, 0);
  const bytes = await deflate(plain);
  if (bytes.length > MAX_BATCH_PAYLOAD_BYTES) {
    throw new BatchTooLargeError(plain.length, bytes.length);
  }
  checkHeader(head);
  const { iv, ciphertext, wrapped: [wrapped] } = await encryptForReaders(bytes, header(head), [
    ownEncryptionKey,
  ]);
  const unsigned = {
    owner: head.owner,
    nonce: head.nonce,
    seq: head.seq,
    total: head.total,
    final: head.final,
    iv: toBase64Url(iv),
    ciphertext: toBase64Url(ciphertext),
    key: toBase64Url(wrapped!),
  };
  const signature = await sign(ownSigningKey, signedBytes(unsigned));
  return { v: VERSION, ...unsigned, signature: toBase64Url(signature) };
}

/**
 * Verifies the owner's signature on `batch`, then decrypts it with his RSA-OAEP private key.
 * Throws {@link TamperedEnvelopeError} when the signature is not the owner's (another key, or
 * any altered byte) or the content does not decrypt. Validate untrusted input with
 * {@link parseSealedBatch} first.
 */
export async function openBatch(
  batch: SealedBatch,
  ownPrivateKey: CryptoKey,
  ownVerifyKey: CryptoKey,
): Promise<string> {
  if (!(await verifySignature(ownVerifyKey, batch.signature, () => signedBytes(batch)))) {
    throw new TamperedEnvelopeError(
      `History batch ${batch.seq} for ${batch.owner}: the signature is not this user's`,
    );
  }
  try {
    const aes = await unwrapObjectKey([batch.key], ownPrivateKey);
    if (!aes) throw new Error("not wrapped for this key");
    const compressed = await decryptObject(
      aes,
      fromBase64Url(batch.iv),
      fromBase64Url(batch.ciphertext),
      header(batch),
    );
    return fromUtf8(await inflate(new Uint8Array(compressed), MAX_BATCH_PLAIN_BYTES));
  } catch {
    throw new TamperedEnvelopeError(
      `History batch ${batch.seq} for ${batch.owner}: the content does not decrypt`,
    );
  }
}

function checkHeader(h: BatchHeader): void {
  const obj = h as unknown as Record<string, unknown>;
  readString(obj, "owner", "header", { pattern: USERNAME_PATTERN, max: 32 });
  readString(obj, "nonce", "header", NONCE_RULE);
  readNumber(obj, "seq", "header", { min: 0, max: MAX_ROWS, integer: true });
  readNumber(obj, "total", "header", { min: 0, max: MAX_ROWS, integer: true });
  readBoolean(obj, "final", "header");
}

/** Validates a sealed batch from the network: shape, sizes and encodings. */
export function parseSealedBatch(value: unknown, path = "batch"): SealedBatch {
  const obj = readObject(value, path);
  if (obj.v !== VERSION) {
    throw new ProtocolError("unsupported_version", `${path}.v`, "Unsupported batch version");
  }
  return {
    v: VERSION,
    owner: readString(obj, "owner", path, { pattern: USERNAME_PATTERN, max: 32 }),
    nonce: readString(obj, "nonce", path, NONCE_RULE),
    seq: readNumber(obj, "seq", path, { min: 0, max: MAX_ROWS, integer: true }),
    total: readNumber(obj, "total", path, { min: 0, max: MAX_ROWS, integer: true }),
    final: readBoolean(obj, "final", path),
    iv: readString(obj, "iv", path, { pattern: BASE64URL_PATTERN, min: 16, max: 16 }),
    ciphertext: readString(obj, "ciphertext", path, {
      pattern: BASE64URL_PATTERN,
      min: 22,
      max: MAX_CIPHERTEXT_CHARS,
    }),
    key: readString(obj, "key", path, RSA_RULE),
    signature: readString(obj, "signature", path, RSA_RULE),
  };
}

function ackBytes(owner: string, nonce: string, rows: number): Uint8Array<ArrayBuffer> {
  return lengthPrefixed([ACK_DOMAIN, owner, nonce, String(rows)]);
}

/**
 * The receiving device's signature saying it stored all `rows` rows of transfer `nonce`: only a
 * device holding the owner's private key can make it, so nobody in the signaling path can make
 * the old device stop early.
 */
export async function signHandoverAck(
  owner: string,
  nonce: string,
  rows: number,
  ownSigningKey: CryptoKey,
): Promise<string> {
  return toBase64Url(await sign(ownSigningKey, ackBytes(owner, nonce, rows)));
}

/** Whether `signature` is the owner's acknowledgement of `rows` rows of transfer `nonce`. */
export async function verifyHandoverAck(
  owner: string,
  nonce: string,
  rows: number,
  signature: string,
  ownVerifyKey: CryptoKey,
): Promise<boolean> {
  return await verifySignature(ownVerifyKey, signature, () => ackBytes(owner, nonce, rows));
}
