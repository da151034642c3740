/**
 * Session tokens: `<base64url(JSON payload)>.<HMAC>` signed with the cluster secret, so every
 * server of the cluster can check a token's form without a shared table (a browser failing over
 * to another server resumes with the same token); whether its session is still the user's newest
 * and not signed out is the ring's account record's to say (`sessions.ts`).
 *
 * A session has two tokens: a short-lived access token (`resume`, {@link ACCESS_TTL_MS}) and a
 * refresh token (`refresh`, the session's lifetime) that is traded for a new pair before the
 * access token expires; each refresh token carries a generation and only the newest one of its
 * session is accepted (the ring keeps which), so a copied refresh token dies at the next refresh.
 */
import { fromBase64Url, toBase64Url } from "../../shared/crypto/encoding.ts";
import type { Hmac } from "../cluster/mod.ts";

/** What a valid token proves. */
export interface SessionClaims {
  username: string;
  sessionId: string;
  /** When the session began (the issuing server's clock); orders sessions of one user. */
  issuedAt: number;
  expiresAt: number;
  /**
   * Which registration of the name the session belongs to (its account version): a token of a
   * registration that lost to an older one is refused. Absent in older tokens.
   */
  account?: string;
  /** Only in a refresh token: its generation (see the module comment). */
  refresh?: number;
}

/** Lifetime of an access token, in ms (refreshed before it ends). */
export const ACCESS_TTL_MS = 3_600_000;

/** The token failed verification; `code` says why. */
export class TokenError extends Error {
  override name = "TokenError";
  /** Creates the error. */
  constructor(readonly code: "not_authenticated" | "session_expired", message: string) {
    super(message);
  }
}

/** Issues and verifies session tokens. */
export class Tokens {
  readonly #accessTtlMs: number;

  /**
   * Creates a token service; `ttlMs` is the session lifetime (of its refresh tokens), access
   * tokens last `accessTtlMs` (at most `ttlMs`).
   */
  constructor(
    private readonly hmac: Hmac,
    private readonly ttlMs: number,
    accessTtlMs = ACCESS_TTL_MS,
  ) {
    this.#accessTtlMs = Math.min(accessTtlMs, ttlMs);
  }

  /**
   * A new access token for `username` (of account version `account`): of a new session, or of
   * `session` (a refresh keeps the session's id and start).
   */
  async issue(
    username: string,
    now = Date.now(),
    account?: string,
    session?: { sessionId: string; issuedAt: number },
  ): Promise<{ token: string; claims: SessionClaims }> {
    const claims: SessionClaims = {
      username,
      sessionId: session?.sessionId ?? toBase64Url(crypto.getRandomValues(new Uint8Array(12))),
      issuedAt: session?.issuedAt ?? now,
      expiresAt: now + this.#accessTtlMs,
      ...(account === undefined ? {} : { account }),
    };
    return { token: await this.#sign(claims), claims };
  }

  /** The refresh token of generation `generation` of the session of `claims`. */
  issueRefresh(claims: SessionClaims, generation: number, now = Date.now()): Promise<string> {
    return this.#sign({
      username: claims.username,
      sessionId: claims.sessionId,
      issuedAt: claims.issuedAt,
      expiresAt: now + this.ttlMs,
      ...(claims.account === undefined ? {} : { account: claims.account }),
      refresh: generation,
    });
  }

  /**
   * The salt served for `username` when it has no account: the first 16 bytes of the cluster
   * secret's HMAC of the name, base64url, so every server of the ring serves the same one.
   */
  async fakeSalt(username: string): Promise<string> {
    const mac = fromBase64Url(await this.hmac.sign(`p2p-chat fake salt 1\n${username}`));
    return toBase64Url(mac.slice(0, 16));
  }

  async #sign(claims: SessionClaims): Promise<string> {
    const payload = toBase64Url(new TextEncoder().encode(JSON.stringify(claims)));
    return `${payload}.${await this.hmac.sign(payload)}`;
  }

  /**
   * The claims of a genuine, unexpired token; throws {@link TokenError} otherwise. With
   * `allowExpired` an expired but genuine token is accepted (a deferred hand-over claim, which
   * the user's signature authorizes, may come long after its session ended).
   */
  async verify(
    token: string,
    now = Date.now(),
    options: { allowExpired?: boolean; refresh?: boolean } = {},
  ): Promise<SessionClaims> {
    const [payload, signature, extra] = token.split(".");
    if (
      !payload || !signature || extra !== undefined || !(await this.hmac.verify(payload, signature))
    ) {
      throw new TokenError("not_authenticated", "Session is not valid: please log in again");
    }
    let claims: SessionClaims;
    try {
      claims = JSON.parse(new TextDecoder().decode(fromBase64Url(payload)));
    } catch {
      throw new TokenError("not_authenticated", "Session is not valid: please log in again");
    }
    if (
      typeof claims !== "object" || claims === null || typeof claims.username !== "string" ||
      typeof claims.sessionId !== "string"
    ) {
      throw new TokenError("not_authenticated", "Session is not valid: please log in again");
    }
    if (claims.account !== undefined && typeof claims.account !== "string") {
      throw new TokenError("not_authenticated", "Session is not valid: please log in again");
    }
    // A refresh token only refreshes; an access token never does.
    const isRefresh = claims.refresh !== undefined;
    if (
      isRefresh !== (options.refresh === true) ||
      (isRefresh && (!Number.isSafeInteger(claims.refresh) || claims.refresh! < 0))
    ) {
      throw new TokenError("not_authenticated", "Session is not valid: please log in again");
    }
    // Tokens issued before sessions were ordered carry no issuedAt: they are the oldest.
    if (typeof claims.issuedAt !== "number") claims.issuedAt = 0;
    if (typeof claims.expiresAt !== "number") {
      throw new TokenError("not_authenticated", "Session is not valid: please log in again");
    }
    if (claims.expiresAt <= now && !options.allowExpired) {
      throw new TokenError("session_expired", "Session expired: please log in again");
    }
    return claims;
  }
}
