/** HMAC-SHA-256 over the cluster secret: signs ring RPC bodies and session tokens. */

const encoder = new TextEncoder();

/** Base64url without padding. */
export function toBase64Url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");
}

/** Inverse of {@link toBase64Url}; throws on malformed input. */
export function fromBase64Url(text: string): Uint8Array {
  const b64 = text.replaceAll("-", "+").replaceAll("_", "/");
  const bin = atob(b64 + "=".repeat((4 - b64.length % 4) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** A keyed signer created once per process from the cluster secret. */
export class Hmac {
  #key: Promise<CryptoKey>;

  /** Imports `secret` as an HMAC-SHA-256 key. */
  constructor(secret: string) {
    this.#key = crypto.subtle.importKey(
      "raw",
      encoder.encode(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign", "verify"],
    );
  }

  /** The base64url signature of `text`. */
  async sign(text: string): Promise<string> {
    const sig = await crypto.subtle.sign("HMAC", await this.#key, encoder.encode(text));
    return toBase64Url(new Uint8Array(sig));
  }

  /** Whether `signature` is the signature of `text` (constant-time, by Web Crypto). */
  async verify(text: string, signature: string): Promise<boolean> {
    let sig: Uint8Array;
    try {
      sig = fromBase64Url(signature);
    } catch {
      return false;
    }
    return await crypto.subtle.verify(
      "HMAC",
      await this.#key,
      sig as Uint8Array<ArrayBuffer>,
      encoder.encode(text),
    );
  }
}
