/**
 * What a server signs and checks its server-to-server traffic with: the cluster secret (an
 * {@link Hmac}), this server's own address (requests name their sender and destination), and a
 * cache of the nonces seen within the allowed clock skew, so a captured request cannot be
 * replayed (DESIGN §4: bound to method, path, sender, destination, time and a nonce).
 */
import { toBase64Url } from "../../shared/crypto/encoding.ts";
import type { Hmac } from "./hmac.ts";
import type { LinkPool } from "./link.ts";

/** Largest accepted clock difference between two servers, in milliseconds. */
export const MAX_CLOCK_SKEW_MS = 30_000;

/** Configuration of a {@link ClusterKey}. */
export interface ClusterKeyOptions {
  /** Most nonces remembered at once; past it new requests are refused. @default 1_000_000 */
  maxNonces?: number;
  /** The clock, in ms. @default Date.now */
  now?: () => number;
}

/** What a signed request proves, once verified. */
export interface SignedRequestHeaders {
  from: string;
  to: string;
  time: number;
  nonce: string;
  signature: string;
}

/** The cluster secret plus this server's identity and replay cache. */
export class ClusterKey {
  readonly hmac: Hmac;
  readonly self: string;
  readonly now: () => number;
  #maxNonces: number;
  /** nonce → time it can be forgotten (insertion order ≈ time order). */
  #nonces = new Map<string, number>();
  #heardListeners = new Set<(address: string) => void>();
  /**
   * Persistent links to peers that signed POSTs travel over when they can (see link.ts); without
   * them every request goes by `fetch`.
   */
  links: LinkPool | undefined;

  /** Creates the key of the server at `self`. */
  constructor(hmac: Hmac, self: string, options: ClusterKeyOptions = {}) {
    this.hmac = hmac;
    this.self = self;
    this.now = options.now ?? Date.now;
    this.#maxNonces = options.maxNonces ?? 1_000_000;
  }

  /**
   * Calls `listener` with the address of a server each time one is heard from: a request from it
   * verified, or an answer from it signed with the cluster secret (the membership counts these
   * as signs of life). Returns the unsubscriber.
   */
  onPeerHeard(listener: (address: string) => void): () => void {
    this.#heardListeners.add(listener);
    return () => this.#heardListeners.delete(listener);
  }

  /** Tells the {@link onPeerHeard} listeners that the server at `address` was heard from. */
  heard(address: string): void {
    for (const listener of this.#heardListeners) {
      try {
        listener(address);
      } catch {
        // A listener's failure is its own; the request or answer goes on.
      }
    }
  }

  /** A fresh random nonce. */
  nonce(): string {
    return toBase64Url(crypto.getRandomValues(new Uint8Array(16)));
  }

  /**
   * Records `nonce` as used; false when it was seen before within the window (a replay) or when
   * the cache is full of nonces still inside the window.
   */
  remember(nonce: string): boolean {
    const now = this.now();
    for (const [n, until] of this.#nonces) {
      if (until > now) break;
      this.#nonces.delete(n);
    }
    if (this.#nonces.has(nonce) || this.#nonces.size >= this.#maxNonces) return false;
    this.#nonces.set(nonce, now + 2 * MAX_CLOCK_SKEW_MS);
    return true;
  }
}

/** The text a request signature covers. */
export function requestSigned(
  method: string,
  to: string,
  from: string,
  time: string,
  nonce: string,
  body: string,
): string {
  return `p2p-chat request 2\n${method}\n${to}\n${from}\n${time}\n${nonce}\n${body}`;
}

/** The text a response signature covers: bound to the request it answers. */
export function responseSigned(requestSignature: string, status: number, body: string): string {
  return `p2p-chat response 2\n${requestSignature}\n${status}\n${body}`;
}
