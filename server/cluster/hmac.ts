/** HMAC-SHA-256 over the cluster secret: signs ring RPC bodies and session tokens. */

import { createHmac, timingSafeEqual } from "node:crypto";
import { fromBase64Url, toBase64Url } from "../../shared/crypto/encoding.ts";

const encoder = new TextEncoder();

/**
 * A keyed signer created once per process from the cluster secret. It computes in place
 * (node:crypto's HMAC, synchronous): every ring RPC is signed and checked on both ends, and Web
 * Crypto's asynchronous sign and verify each cost a trip through a worker thread — measured,
 * about a third of a server's main-thread time under a stream of one-message sends, and about
 * three times the CPU per signature. The signatures are the same bytes either way.
 */
export class Hmac {
  #secret: Uint8Array;

  /** Keeps `secret` as an HMAC-SHA-256 key. */
  constructor(secret: string) {
    this.#secret = encoder.encode(secret);
  }

  #mac(text: string): Uint8Array {
    return createHmac("sha256", this.#secret).update(text).digest();
  }

  /** The base64url signature of `text`. */
  sign(text: string): Promise<string> {
    return Promise.resolve(toBase64Url(this.#mac(text)));
  }

  /** Whether `signature` is the signature of `text` (compared in constant time). */
  verify(text: string, signature: string): Promise<boolean> {
    let sig: Uint8Array;
    try {
      sig = fromBase64Url(signature);
    } catch {
      return Promise.resolve(false);
    }
    const mac = this.#mac(text);
    return Promise.resolve(sig.length === mac.length && timingSafeEqual(sig, mac));
  }
}
