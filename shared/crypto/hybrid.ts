/**
 * The steps every sealed object shares (chat envelopes, history batches): a fresh AES-256-GCM key
 * per object, that key wrapped with RSA-OAEP for each reader, and RSA-PSS signatures (32-byte
 * salt). The callers own their formats: what the additional data and the signed bytes are.
 */
import { fromBase64Url } from "./encoding.ts";

/** RSA-PSS parameters of every signature. */
export const PSS = { name: "RSA-PSS", saltLength: 32 } as const;

/** Ciphertext of one object, its IV, and its key wrapped for each reader (in the given order). */
export interface Sealed {
  iv: Uint8Array<ArrayBuffer>;
  ciphertext: ArrayBuffer;
  wrapped: ArrayBuffer[];
}

/**
 * Encrypts `plain` under a fresh AES-256-GCM key with `additionalData` authenticated in clear,
 * and wraps the key with each of `readers` (RSA-OAEP public keys). The raw key is zeroed after.
 */
export async function encryptForReaders(
  plain: Uint8Array<ArrayBuffer>,
  additionalData: Uint8Array<ArrayBuffer>,
  readers: readonly CryptoKey[],
): Promise<Sealed> {
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  try {
    const aes = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt"]);
    const [ciphertext, ...wrapped] = await Promise.all([
      crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData }, aes, plain),
      ...readers.map((r) => crypto.subtle.encrypt({ name: "RSA-OAEP" }, r, raw)),
    ]);
    return { iv, ciphertext: ciphertext!, wrapped };
  } finally {
    raw.fill(0);
  }
}

/**
 * The AES key of an object from the first of `wrapped` (base64url) that `privateKey` unwraps, or
 * null when none is wrapped for this key.
 */
export async function unwrapObjectKey(
  wrapped: readonly string[],
  privateKey: CryptoKey,
): Promise<CryptoKey | null> {
  for (const w of wrapped) {
    let raw: ArrayBuffer;
    try {
      raw = await crypto.subtle.decrypt({ name: "RSA-OAEP" }, privateKey, fromBase64Url(w));
    } catch {
      continue; // not wrapped for this key
    }
    if (raw.byteLength !== 32) return null;
    const key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["decrypt"]);
    new Uint8Array(raw).fill(0);
    return key;
  }
  return null;
}

/** Decrypts and authenticates; rejects on any altered byte of ciphertext, IV or data. */
export function decryptObject(
  key: CryptoKey,
  iv: Uint8Array<ArrayBuffer>,
  ciphertext: Uint8Array<ArrayBuffer>,
  additionalData: Uint8Array<ArrayBuffer>,
): Promise<ArrayBuffer> {
  return crypto.subtle.decrypt({ name: "AES-GCM", iv, additionalData }, key, ciphertext);
}

/** Signs `bytes` with an RSA-PSS private key. */
export function sign(signingKey: CryptoKey, bytes: Uint8Array<ArrayBuffer>): Promise<ArrayBuffer> {
  return crypto.subtle.sign(PSS, signingKey, bytes);
}

/**
 * Whether `signature` (base64url) is valid for the RSA-PSS public key over the bytes `signed`
 * returns. A malformed signature or signed field is simply not valid: this never throws.
 */
export async function verifySignature(
  verifyKey: CryptoKey,
  signature: string,
  signed: () => Uint8Array<ArrayBuffer>,
): Promise<boolean> {
  try {
    return await crypto.subtle.verify(PSS, verifyKey, fromBase64Url(signature), signed());
  } catch {
    return false;
  }
}
