/**
 * Session tokens: `<base64url(JSON payload)>.<HMAC>` signed with the cluster secret, so every
 * server of the cluster can check a token without a shared session table (a browser failing
 * over to another server resumes with the same token).
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
}

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
  /** Creates a token service; `ttlMs` is the session lifetime. */
  constructor(private readonly hmac: Hmac, private readonly ttlMs: number) {}

  /** A new token for `username` (of account version `account`), valid for the configured lifetime. */
  async issue(
    username: string,
    now = Date.now(),
    account?: string,
  ): Promise<{ token: string; claims: SessionClaims }> {
    const claims: SessionClaims = {
      username,
      sessionId: toBase64Url(crypto.getRandomValues(new Uint8Array(12))),
      issuedAt: now,
      expiresAt: now + this.ttlMs,
      ...(account === undefined ? {} : { account }),
    };
    const payload = toBase64Url(new TextEncoder().encode(JSON.stringify(claims)));
    return { token: `${payload}.${await this.hmac.sign(payload)}`, claims };
  }

  /**
   * The claims of a genuine, unexpired token; throws {@link TokenError} otherwise. With
   * `allowExpired` an expired but genuine token is accepted (a deferred hand-over claim, which
   * the user's signature authorizes, may come long after its session ended).
   */
  async verify(
    token: string,
    now = Date.now(),
    options: { allowExpired?: boolean } = {},
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
