/**
 * The ICE servers a session's browser uses for its data channels: the configured STUN URLs, and
 * TURN URLs with credentials that expire. The credentials follow the TURN REST convention that
 * coturn implements with `use-auth-secret` / `static-auth-secret`: the username is
 * `<expiry in Unix seconds>:<user>` and the password is base64(HMAC-SHA1(secret, username)), so
 * the TURN server checks them with the shared secret alone and refuses them after the expiry.
 */
import type { IceServer } from "../../shared/mod.ts";
import type { Clock } from "../../shared/clock.ts";

/** Collaborators of {@link IceServers}. */
export interface IceServersDeps {
  clock: Pick<Clock, "now">;
}

/** Configuration of {@link IceServers}. */
export interface IceServersOptions {
  /** `stun:` URLs, handed out as they are. @default [] */
  stunUrls?: string[];
  /** `turn:`/`turns:` URLs, handed out with credentials; need `turnSecret`. @default [] */
  turnUrls?: string[];
  /** The secret shared with the TURN server (coturn's `static-auth-secret`). */
  turnSecret?: string;
  /** How long TURN credentials stay valid, ms. @default 86400000 (one day) */
  turnTtlMs?: number;
}

/** What a session is given: its ICE servers and when their credentials expire (0: never). */
export interface IceGrant {
  iceServers: IceServer[];
  expiresAt: number;
}

/** Hands out ICE servers with fresh TURN credentials. */
export class IceServers {
  #deps: IceServersDeps;
  #stun: string[];
  #turn: string[];
  #ttlMs: number;
  #key: Promise<CryptoKey> | undefined;

  /** Creates the source; throws when TURN URLs are given without a secret. */
  constructor(deps: IceServersDeps, options: IceServersOptions = {}) {
    this.#deps = deps;
    this.#stun = options.stunUrls ?? [];
    this.#turn = options.turnUrls ?? [];
    this.#ttlMs = options.turnTtlMs ?? 86_400_000;
    if (this.#turn.length > 0 && !options.turnSecret) {
      throw new Error("Cannot hand out TURN servers: no TURN secret configured");
    }
    if (options.turnSecret && this.#turn.length > 0) {
      this.#key = crypto.subtle.importKey(
        "raw",
        new TextEncoder().encode(options.turnSecret),
        { name: "HMAC", hash: "SHA-1" },
        false,
        ["sign"],
      );
    }
  }

  /** The ICE servers for `user`'s session now. */
  async forUser(user: string): Promise<IceGrant> {
    const iceServers: IceServer[] = [];
    if (this.#stun.length > 0) iceServers.push({ urls: [...this.#stun] });
    if (!this.#key) return { iceServers, expiresAt: 0 };
    // Whole seconds, as the convention has it; never later than now + TTL.
    const expirySeconds = Math.floor((this.#deps.clock.now() + this.#ttlMs) / 1000);
    const username = `${expirySeconds}:${user}`;
    const credential = await turnCredential(await this.#key, username);
    iceServers.push({ urls: [...this.#turn], username, credential });
    return { iceServers, expiresAt: expirySeconds * 1000 };
  }
}

/** base64(HMAC-SHA1(key, username)): the TURN REST password for `username`. */
export async function turnCredential(key: CryptoKey, username: string): Promise<string> {
  const mac = new Uint8Array(
    await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(username)),
  );
  return btoa(String.fromCharCode(...mac));
}
