/**
 * Byte encodings used by the crypto records: base64url without padding (the form every key,
 * IV, ciphertext and signature takes on the wire and in storage), UTF-8, and an unambiguous
 * length-prefixed concatenation for data that is signed.
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The characters of base64url without padding. */
export const BASE64URL_PATTERN = /^[A-Za-z0-9_-]*$/;

/** Encodes bytes as base64url without padding. */
export function toBase64Url(bytes: ArrayBuffer | Uint8Array): string {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let binary = "";
  for (let i = 0; i < view.length; i += 0x8000) {
    binary += String.fromCharCode(...view.subarray(i, i + 0x8000));
  }
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** Decodes base64url (padding optional); throws `TypeError` on anything else. */
export function fromBase64Url(text: string): Uint8Array<ArrayBuffer> {
  if (!BASE64URL_PATTERN.test(text.replace(/=+$/, "")) || text.length % 4 === 1) {
    throw new TypeError("Not base64url");
  }
  const binary = atob(text.replaceAll("-", "+").replaceAll("_", "/").replace(/=+$/, ""));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** UTF-8 bytes of `text`. */
export function utf8(text: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(text);
}

/** The string UTF-8 `bytes` encode; throws `TypeError` on invalid UTF-8. */
export function fromUtf8(bytes: ArrayBuffer | Uint8Array): string {
  return decoder.decode(bytes);
}

/**
 * Concatenates fields, each preceded by its length as 4 bytes big-endian, so that no two
 * different field lists encode to the same bytes (unlike plain concatenation or a separator).
 */
export function lengthPrefixed(fields: Array<string | Uint8Array>): Uint8Array<ArrayBuffer> {
  const parts = fields.map((f) => typeof f === "string" ? utf8(f) : f);
  const out = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0));
  const view = new DataView(out.buffer);
  let at = 0;
  for (const part of parts) {
    view.setUint32(at, part.length);
    out.set(part, at + 4);
    at += 4 + part.length;
  }
  return out;
}
