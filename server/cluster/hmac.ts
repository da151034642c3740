/** HMAC-SHA-256 over the cluster secret: signs ring RPC bodies and session tokens. */

import { fromBase64Url, toBase64Url } from "../../shared/crypto/encoding.ts";

const encoder = new TextEncoder();

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
    let sig: Uint8Array<ArrayBuffer>;
    try {
      sig = fromBase64Url(signature);
    } catch {
      return false;
    }
    return await crypto.subtle.verify(
      "HMAC",
      await this.#key,
      sig,
      encoder.encode(text),
    );
  }
}
