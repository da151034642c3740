/**
 * The encrypted, signed form of one chat message (DESIGN §4), for the data channel and the
 * mailbox alike.
 *
 * {@link seal}: a fresh AES-256-GCM key per message encrypts the text (the clear header — from,
 * to, id, sentAt — is the additional data); the key is wrapped with RSA-OAEP for the recipient
 * and for the sender (so the sender's other sessions can read what they sent); the sender signs
 * with RSA-PSS a canonical, length-prefixed encoding of sender, recipient, id, time, IV,
 * ciphertext and both wrapped keys.
 *
 * {@link openEnvelope}: verifies the signature first, then unwraps the message key with the
 * reader's private key and decrypts. A bad signature or any altered byte gives
 * {@link TamperedEnvelopeError}; an envelope whose keys are not for this reader gives
 * {@link NotForMeError}; a badly shaped one, a `ProtocolError` from {@link parseEnvelope}.
 */
import { MAX_TEXT_LENGTH, MESSAGE_ID_PATTERN } from "../peer_protocol.ts";
import { type FileMeta, validateFileMeta } from "../file_protocol.ts";
import { USERNAME_PATTERN } from "../username.ts";
import { ProtocolError, readNumber, readObject, readString } from "../validate.ts";
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

/** A chat message in clear, as the sender wrote it. */
export interface PlainMessage {
  id: string;
  from: string;
  to: string;
  /** Milliseconds since the epoch, set by the sender. */
  sentAt: number;
  text: string;
  /** A file announced by the message (`file_protocol.ts`), sealed with the text. */
  file?: FileMeta;
}

/** A sealed message; every binary field is base64url. */
export interface Envelope {
  v: 1;
  id: string;
  from: string;
  to: string;
  sentAt: number;
  /** 12-byte AES-GCM IV. */
  iv: string;
  /** AES-256-GCM ciphertext of the UTF-8 text, tag included. */
  ciphertext: string;
  /** The message key wrapped with RSA-OAEP for the recipient and for the sender. */
  keys: { to: string; from: string };
  /** RSA-PSS signature of {@link signedBytes}. */
  signature: string;
}

/** Base class of the errors {@link openEnvelope} throws for a well-formed envelope. */
export class EnvelopeError extends Error {
  override name = "EnvelopeError";
}

/** The signature does not verify, or the content was altered: the message must be rejected. */
export class TamperedEnvelopeError extends EnvelopeError {
  override name = "TamperedEnvelopeError";
}

/** A correctly signed envelope that this reader's private key cannot open. */
export class NotForMeError extends EnvelopeError {
  override name = "NotForMeError";
}

const VERSION = 1;
const DOMAIN = "p2p-chat envelope v1";
const B64 = BASE64URL_PATTERN;
/** Largest ciphertext: 4000 UTF-16 units are at most 12,000 UTF-8 bytes, plus the 16-byte tag. */
const MAX_CIPHERTEXT_CHARS = Math.ceil(((MAX_TEXT_LENGTH * 3 + 16) * 4) / 3);
/** RSA outputs up to 4096 bits (683 characters); 3072 bits give 512. */
const MAX_RSA_CHARS = 683;

function header(m: Pick<Envelope, "id" | "from" | "to" | "sentAt">): Uint8Array<ArrayBuffer> {
  return lengthPrefixed([DOMAIN, m.from, m.to, m.id, String(m.sentAt)]);
}

/** The bytes the sender signs: header, IV, ciphertext and both wrapped keys, length-prefixed. */
export function signedBytes(e: Omit<Envelope, "signature" | "v">): Uint8Array<ArrayBuffer> {
  return lengthPrefixed([
    header(e),
    fromBase64Url(e.iv),
    fromBase64Url(e.ciphertext),
    fromBase64Url(e.keys.to),
    fromBase64Url(e.keys.from),
  ]);
}

/**
 * Encrypts and signs `message`. `recipientPublicKey` and `senderOwnPublicKey` are RSA-OAEP
 * public keys; `senderSigningKey` is the sender's RSA-PSS private key.
 */
export async function seal(
  message: PlainMessage,
  senderSigningKey: CryptoKey,
  recipientPublicKey: CryptoKey,
  senderOwnPublicKey: CryptoKey,
): Promise<Envelope> {
  checkMessage(message);
  const { iv, ciphertext, wrapped: [keyTo, keyFrom] } = await encryptForReaders(
    sealedBody(message),
    header(message),
    [recipientPublicKey, senderOwnPublicKey],
  );
  const unsigned = {
    id: message.id,
    from: message.from,
    to: message.to,
    sentAt: message.sentAt,
    iv: toBase64Url(iv),
    ciphertext: toBase64Url(ciphertext),
    keys: { to: toBase64Url(keyTo!), from: toBase64Url(keyFrom!) },
  };
  const signature = await sign(senderSigningKey, signedBytes(unsigned));
  return { v: VERSION, ...unsigned, signature: toBase64Url(signature) };
}

/**
 * Verifies and decrypts `envelope` with the reader's RSA-OAEP private key (the recipient's or
 * the sender's own) and the sender's RSA-PSS public key. Validate untrusted input with
 * {@link parseEnvelope} first.
 */
export async function openEnvelope(
  envelope: Envelope,
  myPrivateKey: CryptoKey,
  senderVerifyKey: CryptoKey,
): Promise<PlainMessage> {
  const valid = await verifySignature(
    senderVerifyKey,
    envelope.signature,
    () => signedBytes(envelope),
  );
  if (!valid) {
    throw new TamperedEnvelopeError(
      `Message ${envelope.id} from ${envelope.from}: the signature does not match`,
    );
  }
  const key = await unwrapObjectKey([envelope.keys.to, envelope.keys.from], myPrivateKey);
  if (!key) throw new NotForMeError(`Message ${envelope.id} is not encrypted for this key`);
  try {
    const plain = await decryptObject(
      key,
      fromBase64Url(envelope.iv),
      fromBase64Url(envelope.ciphertext),
      header(envelope),
    );
    return {
      id: envelope.id,
      from: envelope.from,
      to: envelope.to,
      sentAt: envelope.sentAt,
      ...openedBody(new Uint8Array(plain)),
    };
  } catch {
    throw new TamperedEnvelopeError(
      `Message ${envelope.id} from ${envelope.from}: the content does not decrypt`,
    );
  }
}

// --- Messages announcing a file (issue 15) -----------------------------------------------------
/** First byte of a sealed body that is JSON `{text, file}` rather than the bare UTF-8 text. */
const STRUCTURED_BODY = 0;

/** The plaintext sealed for `m`: its text, or for a file message a marked JSON body. */
function sealedBody(m: PlainMessage): Uint8Array<ArrayBuffer> {
  if (m.file === undefined) return utf8(m.text);
  const json = utf8(JSON.stringify({ text: m.text, file: m.file }));
  const body = new Uint8Array(json.length + 1);
  body[0] = STRUCTURED_BODY;
  body.set(json, 1);
  return body;
}

/** The text (and file) of an opened body; throws if a structured body is malformed. */
function openedBody(plain: Uint8Array): { text: string; file?: FileMeta } {
  if (plain[0] !== STRUCTURED_BODY) return { text: fromUtf8(plain) };
  const obj = readObject(JSON.parse(fromUtf8(plain.subarray(1))), "body");
  return {
    text: readString(obj, "text", "body", { min: 1, max: MAX_TEXT_LENGTH }),
    file: validateFileMeta(obj.file, "body.file"),
  };
}

/** Largest sealed body: what the ciphertext limit of {@link parseEnvelope} lets through. */
const MAX_BODY_BYTES = MAX_TEXT_LENGTH * 3;
// -------------------------------------------------------------------------------------------------

function checkMessage(m: PlainMessage): void {
  const obj = m as unknown as Record<string, unknown>;
  readString(obj, "id", "message", { pattern: MESSAGE_ID_PATTERN, max: 64 });
  readString(obj, "from", "message", { pattern: USERNAME_PATTERN, max: 32 });
  readString(obj, "to", "message", { pattern: USERNAME_PATTERN, max: 32 });
  readNumber(obj, "sentAt", "message", { min: 0, max: 8.64e15, integer: true });
  readString(obj, "text", "message", { min: 1, max: MAX_TEXT_LENGTH });
  if (m.file !== undefined) {
    validateFileMeta(m.file, "message.file");
    if (sealedBody(m).length > MAX_BODY_BYTES) {
      throw new ProtocolError("bad_frame", "message.file", "The file's description is too long");
    }
  }
  // A bare text starting with the marker byte would be read as a structured body.
  if (m.file === undefined && m.text.startsWith("\u0000")) {
    throw new ProtocolError("bad_frame", "message.text", "A text cannot start with a NUL");
  }
}

/**
 * Validates an envelope from the network or storage: shape, sizes and encodings. Throws a
 * `ProtocolError` (code `bad_frame`, or `unsupported_version`) naming the bad field.
 */
export function parseEnvelope(value: unknown): Envelope {
  const obj = readObject(value, "");
  if (obj.v !== VERSION) {
    throw new ProtocolError("unsupported_version", "v", "Unsupported envelope version");
  }
  const keys = readObject(obj.keys, "keys");
  const rsa = { pattern: B64, min: 16, max: MAX_RSA_CHARS };
  return {
    v: VERSION,
    id: readString(obj, "id", "", { pattern: MESSAGE_ID_PATTERN, max: 64 }),
    from: readString(obj, "from", "", { pattern: USERNAME_PATTERN, max: 32 }),
    to: readString(obj, "to", "", { pattern: USERNAME_PATTERN, max: 32 }),
    sentAt: readNumber(obj, "sentAt", "", { min: 0, max: 8.64e15, integer: true }),
    iv: readString(obj, "iv", "", { pattern: B64, min: 16, max: 16 }),
    ciphertext: readString(obj, "ciphertext", "", {
      pattern: B64,
      min: 22,
      max: MAX_CIPHERTEXT_CHARS,
    }),
    keys: {
      to: readString(keys, "to", "keys", rsa),
      from: readString(keys, "from", "keys", rsa),
    },
    signature: readString(obj, "signature", "", rsa),
  };
}
