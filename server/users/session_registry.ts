/**
 * One active session per user: the newest session this server has heard of, per user. A session
 * is newer when it was issued later (ties broken by session id, so every server orders the same
 * two sessions alike). Servers learn of sessions from logins and resumes on themselves and from
 * the `superseded` notices other servers broadcast on login.
 *
 * Limits of this first cut (until sessions live on the ring): the table is in memory, so a
 * restarted server, or one that was unreachable when a login was broadcast, accepts an older
 * token until it hears of the newer session; and issuedAt comes from the issuing server's clock,
 * so servers whose clocks differ by more than the time between two logins may order them wrongly.
 */

/** The part of a session that orders it. */
export interface SessionStamp {
  sessionId: string;
  issuedAt: number;
}

/** Whether `a` is newer than `b`. */
export function isNewer(a: SessionStamp, b: SessionStamp): boolean {
  return a.issuedAt !== b.issuedAt ? a.issuedAt > b.issuedAt : a.sessionId > b.sessionId;
}

/** The newest known session per user, and whether it signed out. */
export class SessionRegistry {
  #newest = new Map<string, SessionStamp & { hasEnded?: boolean }>();

  /** Creates the registry; at most `maxUsers` users are tracked (the oldest entry goes first). */
  constructor(private readonly maxUsers = 1_000_000) {}

  /** The newest session known for `username`. */
  newest(username: string): SessionStamp | undefined {
    return this.#newest.get(username);
  }

  /**
   * Whether `stamp` is the newest known session of `username` (or no session is known), and has
   * not signed out.
   */
  isCurrent(username: string, stamp: SessionStamp): boolean {
    const known = this.#newest.get(username);
    if (!known) return true;
    if (known.sessionId === stamp.sessionId) return !known.hasEnded;
    return isNewer(stamp, known);
  }

  /** Whether the newest known session of `username` signed out. */
  hasEnded(username: string): boolean {
    return this.#newest.get(username)?.hasEnded === true;
  }

  /** Records that session `stamp` signed out, unless a newer one is known. */
  end(username: string, stamp: SessionStamp): void {
    if (!this.observe(username, stamp)) return;
    this.#newest.set(username, {
      sessionId: stamp.sessionId,
      issuedAt: stamp.issuedAt,
      hasEnded: true,
    });
  }

  /** Records `stamp` if it is newer than what is known; returns whether it is now the newest. */
  observe(username: string, stamp: SessionStamp): boolean {
    if (!this.isCurrent(username, stamp)) return false;
    const known = this.#newest.get(username);
    if (known?.sessionId === stamp.sessionId) return true;
    this.#newest.delete(username);
    if (this.#newest.size >= this.maxUsers) {
      const oldest = this.#newest.keys().next().value;
      if (oldest !== undefined) this.#newest.delete(oldest);
    }
    this.#newest.set(username, { sessionId: stamp.sessionId, issuedAt: stamp.issuedAt });
    return true;
  }
}
