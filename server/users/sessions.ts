/**
 * Sessions: login and resume, one active session per user, and the history hand-over grace.
 *
 * A login or resume binds a connection to the user's session and answers once the user's
 * presence record is on the ring (at most `presenceWriteWaitMs`), so other servers can already
 * route to it. A login issues a new session: older local connections of the same user are told
 * `superseded`, and every other live server hears of it (a `session_started` notice in a cluster
 * `deliver`); a resume with an older session's token is refused. A superseded connection leaves
 * the user's session at once but stays open for a bounded grace, in which it may only exchange
 * signals with the session that replaced it (routed as `handover_signal` frames), so the old
 * device can hand its history over an encrypted data channel (DESIGN §4); then it is closed.
 * Failed logins are limited per username and per address, across the ring (`shared_limits.ts`);
 * a silent connection is closed (its silence counted in time this server listened: not for
 * frames its own stalled event loop had yet to read).
 * A session belongs to one registration of its name (the token says which): when that
 * registration loses the name to an older one (two sides of a partition registered it), its
 * connections are told and closed and its tokens are refused.
 *
 * The user's newest session lives on the ring with the account (K + 1 copies): a login writes
 * it before answering, a `logout` marks it signed out, and a `resume` or `refresh` reads it from
 * the ring, so every server — one restarted from disk too — refuses a replaced or signed-out
 * token. The in-memory {@link SessionRegistry} only orders the notices between servers.
 */
import {
  type AccountKeys,
  type AccountRecord,
  type AccountSession,
  type HandoverClaim,
  PRESENCE_TIMEOUT_MS,
  type PreviousSession,
  type PublicKeys,
  type ServerFrame,
  type SignalData,
  SUPERSEDED_CLOSE_CODE,
} from "../../shared/mod.ts";
import type { Clock, TimerHandle } from "../../shared/clock.ts";
import { importPublicKey, toBase64Url, verifyHandoverClaim } from "../../shared/crypto/mod.ts";
import type { Log, Metrics } from "../telemetry/mod.ts";
import { accountVersion, credentialsOf } from "../store/mod.ts";
import { type Accounts, NAME_LOST_MESSAGE, type Rekey } from "./accounts.ts";
import { UserError } from "./errors.ts";
import type { LocalSessions } from "./local_sessions.ts";
import type { ClientConnection, MembershipView } from "./ports.ts";
import type { Presence } from "./presence.ts";
import type { AbuseLimits } from "./rate_limit.ts";
import type { Routing } from "./routing.ts";
import { isNewer, SessionRegistry, type SessionStamp } from "./session_registry.ts";
import type { SharedLimits } from "./shared_limits.ts";
import { type SessionClaims, TokenError, type Tokens } from "./tokens.ts";

/** What a token holder is told when the ring holds no account of the token's name. */
export const UNKNOWN_ACCOUNT_MESSAGE = "This account does not exist: register again";

/** What a resume with the token of a session its user signed out of is told. */
export const SIGNED_OUT_MESSAGE = "You signed out of this session: log in again";

/** What the old client is told when a newer login replaces its session. */
export const SUPERSEDED_MESSAGE = "Signed in elsewhere: this session was replaced by a newer login";

/** How long a superseded connection may stay open to hand its history over, in ms. */
export const HANDOVER_GRACE_MS = 30_000;

/**
 * `type` of the self-signal by which a connection in its grace reports how many rows it has
 * handed over (`{type, done, total}`): progress extends the grace up to `handoverMaxMs`. It is
 * taken here, not passed on.
 */
export const HANDOVER_PROGRESS_SIGNAL = "handover_progress";

/** What a connection in its hand-over grace is told when it asks for anything but a self-signal. */
export const HANDOVER_ONLY_MESSAGE =
  "Signed in elsewhere: this connection can only hand your history to your new device; " +
  "log in again to use this device";

/**
 * How often the server checks that its own event loop keeps up, in ms (at most; a tenth of the
 * silence timeout when that is shorter). A check that runs late means frames waited unread.
 */
export const LAG_PROBE_MS = 500;

/** How long a hand-over challenge may be answered, in ms. */
export const CHALLENGE_TTL_MS = 60_000;

/** What a claim of a session that no newer login replaced is told. */
export const NOT_SUPERSEDED_MESSAGE =
  "This session was not replaced by a newer login: there is nothing to hand over";

/** Collaborators of {@link Sessions}. */
export interface SessionsDeps {
  accounts: Accounts;
  tokens: Tokens;
  local: LocalSessions;
  presence: Presence;
  routing: Routing;
  membership: MembershipView;
  /** Failed logins per username and per address (shared across the ring in the server). */
  limits: SharedLimits;
  metrics: Metrics;
  log: Log;
  clock: Clock;
  /**
   * How far behind this process's socket reads are now, in ms (a loopback probe, in the
   * server): a busy runtime can run timers on time and read ready sockets seconds late. Absent:
   * only the lateness of this service's own timers counts.
   */
  ioLag?: () => number;
}

/** Configuration of {@link Sessions}. */
export interface SessionsOptions {
  /** A connection silent this long is closed, in ms. @default PRESENCE_TIMEOUT_MS */
  presenceTimeoutMs?: number;
  /**
   * How long a superseded connection stays open, signaling only with the user's new session, so
   * the old device can hand its history over (DESIGN §4); 0 closes it at once.
   * @default HANDOVER_GRACE_MS
   */
  handoverGraceMs?: number;
  /**
   * Longest a grace may last in all while the old device reports progress: each
   * {@link HANDOVER_PROGRESS_SIGNAL} that reports more rows handed over than the last moves the
   * end to a full grace from now, never past this bound; equal to the grace: never extended.
   * @default 4 × handoverGraceMs
   */
  handoverMaxMs?: number;
  /** Longest a login waits for its presence record to be written on the ring, in ms. @default 2000 */
  presenceWriteWaitMs?: number;
  /**
   * Login failure limits of the in-process counters `createUserServices` builds when it is given
   * no shared limits; missing fields take `DEFAULT_LIMITS`.
   */
  limits?: Partial<Pick<AbuseLimits, "loginFailuresPerUser" | "loginFailuresPerAddress">>;
}

/** A started session, as the `session` frame tells the client. */
export interface SessionGrant {
  username: string;
  token: string;
  expiresAt: number;
  /** Every live server, for the client's fail-over. */
  servers: string[];
  /** At a password login only: the user's own keys, so a new device can unwrap them. */
  keys?: AccountKeys;
  /** The user's public keys (login, resume, refresh). */
  publicKeys?: PublicKeys;
  /** At a login or refresh: the token to trade for the next pair with `refresh`. */
  refreshToken?: string;
  /** At a login: the previous session's device is offline (its hand-over is deferred). */
  handover?: PreviousSession;
  /** At a login of a legacy account (salted with its name): the client sends `rekey`. */
  rekey?: true;
}

/** Logins, resumes, supersede and the hand-over grace of this server's connections. */
export class Sessions {
  #deps: SessionsDeps;
  #presenceTimeoutMs: number;
  #graceMs: number;
  #graceMaxMs: number;
  #writeWaitMs: number;
  #registry = new SessionRegistry();
  #graceTimers = new Map<ClientConnection, TimerHandle>();
  /** When each grace began, and the most rows its connection reported handed over. */
  #graceProgress = new Map<ClientConnection, { beganAt: number; done: number }>();
  #sweeper: TimerHandle | undefined;
  #probe: TimerHandle | undefined;
  #probePeriod: number;
  #lastProbe = 0;
  /**
   * This server's stalls: [when the late check ran, how late it was], oldest first, those of the
   * last few silence timeouts. A frame a client sent during a stall waited for it to end.
   */
  #stalls: [number, number][] = [];
  /** The account version each connection's session belongs to. */
  #accountOf = new WeakMap<ClientConnection, string>();
  /** The hand-over challenge each connection may answer once, and until when. */
  #challenges = new WeakMap<ClientConnection, { value: string; expiresAt: number }>();

  /** Creates the service; {@link start} begins the heartbeat sweep. */
  constructor(deps: SessionsDeps, options: SessionsOptions = {}) {
    this.#deps = deps;
    this.#presenceTimeoutMs = options.presenceTimeoutMs ?? PRESENCE_TIMEOUT_MS;
    this.#graceMs = options.handoverGraceMs ?? HANDOVER_GRACE_MS;
    this.#graceMaxMs = Math.max(this.#graceMs, options.handoverMaxMs ?? 4 * this.#graceMs);
    this.#writeWaitMs = options.presenceWriteWaitMs ?? 2000;
    this.#probePeriod = Math.max(1, Math.min(LAG_PROBE_MS, this.#presenceTimeoutMs / 10));
    const m = deps.metrics;
    m.describe(
      "p2pchat_event_loop_lag_ms",
      "gauge",
      "How late the last event-loop check ran (frames from clients waited as long)",
    );
    m.describe("p2pchat_logins_total", "counter", "Login attempts, by result");
    m.describe("p2pchat_logouts_total", "counter", "Sessions ended by their user (logout)");
    m.describe(
      "p2pchat_sessions_superseded_total",
      "counter",
      "Sessions replaced by a newer login",
    );
    m.describe(
      "p2pchat_rate_limited_total",
      "counter",
      "Requests refused by a rate limit, by kind",
    );
    m.describe("p2pchat_relayed_total", "counter", "Frames relayed between users, by kind");
    m.describe(
      "p2pchat_handover_claims_total",
      "counter",
      "Deferred hand-over claims, by result",
    );
    deps.accounts.onLost((username, loser) => this.#nameLost(username, loser));
  }

  /** Registration `loser` of `username` lost the name: its connections here are told and closed. */
  #nameLost(username: string, loser: string): void {
    const { local, log } = this.#deps;
    for (const conn of local.connections()) {
      const user = local.sessionOf(conn)?.username ?? local.graceOf(conn)?.username;
      if (user !== username || this.#accountOf.get(conn) !== loser) continue;
      log("session_name_lost", { username });
      conn.send({ v: 1, type: "superseded", message: NAME_LOST_MESSAGE });
      conn.close(SUPERSEDED_CLOSE_CODE, "name belongs to an older account");
      this.disconnect(conn);
    }
  }

  /** Starts closing connections that fall silent. */
  start(): void {
    const period = Math.min(5000, this.#presenceTimeoutMs / 3);
    const { clock } = this.#deps;
    this.#lastProbe = clock.now();
    this.#probe = clock.setInterval(() => this.#checkLag(), this.#probePeriod);
    this.#sweeper = clock.setInterval(() => {
      this.#checkLag();
      this.#sweep();
    }, period);
  }

  /** Stops the sweep and the grace timers and closes every connection. */
  stop(): void {
    const { clock, local } = this.#deps;
    clock.clearInterval(this.#sweeper);
    clock.clearInterval(this.#probe);
    for (const timer of this.#graceTimers.values()) clock.clearTimeout(timer);
    this.#graceTimers.clear();
    this.#graceProgress.clear();
    for (const conn of local.connections()) {
      conn.close(1001, "server shutting down");
      // At once, not when the socket reports closing: the presence writes start while the ring runs.
      this.disconnect(conn);
    }
  }

  /** A new connection from a browser. */
  connect(conn: ClientConnection): void {
    this.#deps.local.add(conn);
  }

  /** A connection closed (or must be forgotten): its session ends here. */
  disconnect(conn: ClientConnection): void {
    const grace = this.#graceTimers.get(conn);
    if (grace !== undefined) this.#deps.clock.clearTimeout(grace);
    this.#graceTimers.delete(conn);
    this.#graceProgress.delete(conn);
    const ended = this.#deps.local.remove(conn);
    if (ended) this.#sessionEnded(ended.username);
  }

  /** The user whose session `conn` carries, if it is logged in (and not in a grace). */
  userOf(conn: ClientConnection): string | undefined {
    return this.#deps.local.sessionOf(conn)?.username;
  }

  /** The user whose history `conn` may still hand over, if it is in its grace. */
  graceUserOf(conn: ClientConnection): string | undefined {
    return this.#deps.local.graceOf(conn)?.username;
  }

  /**
   * Logs `username` in on `conn` with the client-derived `secret`. Throws a {@link UserError}:
   * `rate_limited`, `wrong_credentials` or `unavailable`.
   */
  async login(conn: ClientConnection, username: string, secret: string): Promise<SessionGrant> {
    const { metrics, accounts, tokens, clock, limits } = this.#deps;
    // Charged (on the counters' holders) before bcrypt and refunded on success, so parallel
    // guesses count while in flight, whichever servers they are sent to.
    const charge = await limits.beginLogin(username, conn.address);
    const blockedMs = charge.blockedMs;
    if (blockedMs > 0) {
      metrics.inc("p2pchat_logins_total", { result: "rate_limited" });
      metrics.inc("p2pchat_rate_limited_total", { kind: "login" });
      throw new UserError(
        "rate_limited",
        `Too many failed logins: try again in ${Math.ceil(blockedMs / 1000)} s`,
      );
    }
    let account;
    try {
      account = await accounts.verify(username, secret);
    } catch (err) {
      // The ring could not answer: not the user's failure.
      void charge.refund();
      throw err;
    }
    metrics.inc("p2pchat_logins_total", { result: account ? "ok" : "rejected" });
    if (!account) throw new UserError("wrong_credentials", "Unknown username or wrong password");
    void charge.refund();
    const { token, claims } = await tokens.issue(username, clock.now(), accountVersion(account));
    this.#learn(username, account.session);
    const previous = this.#previousSession(username);
    // The new session is the user's newest on the ring before anyone is told of it: from now on
    // every server refuses the older tokens, whatever it remembers.
    const session: AccountSession = { id: claims.sessionId, issuedAt: claims.issuedAt, refresh: 1 };
    await accounts.update({ ...account, session });
    const refreshToken = await tokens.issueRefresh(claims, 1, clock.now());
    this.#accountOf.set(conn, claims.account!);
    await this.#bind(conn, claims);
    this.#newSession(username, claims);
    this.#refuseIfOvertaken(conn, claims);
    void this.#deps.routing.deliverToOthers(username, {
      v: 1,
      type: "session_started",
      sessionId: claims.sessionId,
      issuedAt: claims.issuedAt,
    });
    const { wrapped, salt } = credentialsOf(account);
    const keys = account.keys && wrapped ? { ...account.keys, wrapped } : undefined;
    return {
      ...this.#grant(claims, token, account, keys),
      refreshToken,
      ...previous,
      ...(salt === undefined ? { rekey: true as const } : {}),
    };
  }

  /**
   * Replaces the credentials of `conn`'s account (a legacy account moving to a random salt):
   * stored on the ring as one record. Throws a {@link UserError}: `not_authenticated` (no
   * session), `unavailable`.
   */
  async rekey(conn: ClientConnection, rekey: Rekey): Promise<void> {
    const bound = this.#deps.local.sessionOf(conn);
    if (!bound) throw new UserError("not_authenticated", "Log in first");
    const account = await this.#accountForToken(bound);
    const claims = { username: bound.username, account: this.#accountOf.get(conn) };
    if (this.#hasLostName(claims, account)) {
      throw new UserError("not_authenticated", NAME_LOST_MESSAGE);
    }
    await this.#deps.accounts.rekey(account, rekey);
    this.#deps.log("account_rekeyed", { username: bound.username });
  }

  /**
   * Resumes the session of `token` on `conn` (a reload, or a fail-over to this server). Throws a
   * {@link UserError}: `not_authenticated`, `session_expired`, or `unavailable` when the ring
   * cannot read the account now.
   */
  async resume(conn: ClientConnection, token: string): Promise<SessionGrant> {
    const { tokens, clock } = this.#deps;
    let claims: SessionClaims;
    try {
      claims = await tokens.verify(token, clock.now());
    } catch (err) {
      if (err instanceof TokenError) throw new UserError(err.code, err.message);
      throw err;
    }
    const account = await this.#currentSessionAccount(claims);
    if (!account.session) {
      // A session from before sessions were ring records: it becomes the ring's newest now.
      const session: AccountSession = { id: claims.sessionId, issuedAt: claims.issuedAt };
      await this.#deps.accounts.update({ ...account, session });
    }
    await this.#enter(conn, claims, account);
    return this.#grant(claims, token, account);
  }

  /**
   * Trades the refresh token of the user's current session for a new pair (the old refresh
   * token is refused from then on, on every server) and binds `conn` to the session if it is
   * not yet. Throws a {@link UserError} as {@link resume}.
   */
  async refresh(conn: ClientConnection, refreshToken: string): Promise<SessionGrant> {
    const { tokens, clock, accounts, local, metrics } = this.#deps;
    let claims: SessionClaims;
    try {
      claims = await tokens.verify(refreshToken, clock.now(), { refresh: true });
    } catch (err) {
      if (err instanceof TokenError) throw new UserError(err.code, err.message);
      throw err;
    }
    const account = await this.#currentSessionAccount(claims);
    const current = account.session;
    if (current && current.id === claims.sessionId && claims.refresh! < (current.refresh ?? 0)) {
      // A refresh token that was already traded in: a copy of it is in someone else's hands.
      // The session ends on the ring, so neither the copy nor the newer tokens go on.
      metrics.inc("p2pchat_logins_total", { result: "reused_refresh" });
      this.#registry.end(claims.username, claims);
      await accounts.update({ ...account, session: { ...current, ended: true } });
      this.#deps.log("refresh_token_reused", { username: claims.username });
      throw new UserError(
        "not_authenticated",
        "This session's refresh token was used twice, so it was ended: please log in again",
      );
    }
    if (!current || (current.refresh ?? 0) !== claims.refresh) {
      metrics.inc("p2pchat_logins_total", { result: "stale_refresh" });
      throw new UserError(
        "not_authenticated",
        "This refresh token was already used or replaced: please log in again",
      );
    }
    const generation = claims.refresh! + 1;
    await accounts.update({ ...account, session: { ...current, refresh: generation } });
    const session = { sessionId: claims.sessionId, issuedAt: claims.issuedAt };
    const access = await tokens.issue(claims.username, clock.now(), claims.account, session);
    const next = await tokens.issueRefresh(access.claims, generation, clock.now());
    if (local.sessionOf(conn)?.session.sessionId !== claims.sessionId) {
      await this.#enter(conn, access.claims, account);
    }
    metrics.inc("p2pchat_logins_total", { result: "refreshed" });
    return { ...this.#grant(access.claims, access.token, account), refreshToken: next };
  }

  /**
   * The account of a genuine token, read from the ring now, if the token's session is the
   * user's newest there and not signed out; throws the {@link UserError} the client is told
   * otherwise.
   */
  async #currentSessionAccount(claims: SessionClaims): Promise<AccountRecord> {
    const { metrics } = this.#deps;
    const account = await this.#accountForToken(claims);
    if (this.#hasLostName(claims, account)) {
      metrics.inc("p2pchat_logins_total", { result: "name_lost" });
      throw new UserError("not_authenticated", NAME_LOST_MESSAGE);
    }
    this.#learn(claims.username, account.session);
    if (!this.#registry.isCurrent(claims.username, claims)) {
      const signedOut = this.#registry.newest(claims.username)?.sessionId === claims.sessionId;
      metrics.inc("p2pchat_logins_total", {
        result: signedOut ? "signed_out_token" : "superseded_token",
      });
      throw new UserError(
        "not_authenticated",
        signedOut ? SIGNED_OUT_MESSAGE : SUPERSEDED_MESSAGE,
      );
    }
    return account;
  }

  /** Binds `conn` to the session of `claims` (a resume, or a refresh on a new connection). */
  async #enter(conn: ClientConnection, claims: SessionClaims, account: AccountRecord) {
    this.#accountOf.set(conn, claims.account ?? accountVersion(account));
    await this.#bind(conn, claims);
    this.#newSession(claims.username, claims);
    this.#refuseIfOvertaken(conn, claims);
  }

  /** What the ring says of the user's newest session, taken into the registry. */
  #learn(username: string, session: AccountSession | undefined): void {
    if (!session) return;
    const stamp = { sessionId: session.id, issuedAt: session.issuedAt };
    if (session.ended) this.#registry.end(username, stamp);
    else this.#registry.observe(username, stamp);
  }

  /**
   * A signal from `conn` to its own user: from the current session toward the connections it
   * superseded, or from a connection in its grace toward the session that replaced it. Routed
   * wherever the other side is; throws a {@link UserError} `peer_offline` when nobody took it.
   */
  async signalOwnDevice(conn: ClientConnection, data: SignalData): Promise<void> {
    const { local, routing, metrics } = this.#deps;
    const grace = local.graceOf(conn);
    const bound = local.sessionOf(conn);
    const username = grace?.username ?? bound?.username;
    const current = grace?.current.sessionId ?? bound?.session.sessionId;
    if (!username || !current) throw new UserError("not_authenticated", "Log in first");
    if (grace && data.type === HANDOVER_PROGRESS_SIGNAL) {
      this.#progress(conn, data.done);
      return;
    }
    const frame: Extract<ServerFrame, { type: "handover_signal" }> = {
      v: 1,
      type: "handover_signal",
      toward: grace ? "current" : "handover",
      current,
      data,
    };
    let delivered = frame.toward === "current"
      ? await routing.deliver(username, frame)
      : local.deliver(username, frame);
    // Toward the current session, presence may lag right after the login: ask every server.
    if (!delivered) delivered = await routing.deliverToOthers(username, frame);
    metrics.inc("p2pchat_relayed_total", {
      kind: "handover_signal",
      result: delivered ? "delivered" : "offline",
    });
    if (!delivered) {
      throw new UserError(
        "peer_offline",
        frame.toward === "current"
          ? "Your new session is not connected: the history cannot be handed over"
          : "No other device of yours is handing its history over",
      );
    }
  }

  /**
   * At a login of `username`, before it is bound: `deferred` when an earlier session of the user
   * is known here but no device of the user is online, so its history stays on that device until
   * the device comes back and claims the hand-over ({@link claimHandover}).
   */
  #previousSession(username: string): { handover?: PreviousSession } {
    if (this.#registry.hasEnded(username)) return { handover: "signed_out" };
    const known = this.#registry.newest(username) !== undefined;
    return known && !this.#deps.presence.isOnline(username) ? { handover: "deferred" } : {};
  }

  /**
   * Ends `conn`'s session at the user's request (a `logout`): it leaves at once, and the session
   * is marked signed out on the ring, so its tokens are refused by every server (resolves once
   * W copies say so); the next login is told the device signed out rather than that it owes a
   * hand-over. Throws `not_authenticated` when `conn` carries no session, `unavailable` when
   * the ring could not record it (the session has left this connection all the same).
   */
  async logout(conn: ClientConnection): Promise<void> {
    const bound = this.#deps.local.sessionOf(conn);
    if (!bound) throw new UserError("not_authenticated", "Log in first");
    const { sessionId, issuedAt } = bound.session;
    this.#registry.end(bound.username, { sessionId, issuedAt });
    this.#deps.metrics.inc("p2pchat_logouts_total");
    this.disconnect(conn);
    void this.#deps.routing.deliverToOthers(bound.username, {
      v: 1,
      type: "session_ended",
      sessionId,
      issuedAt,
    });
    const account = await this.#accountForToken(bound);
    await this.#deps.accounts.update({
      ...account,
      session: { id: sessionId, issuedAt, ended: true },
    });
  }

  /** A fresh challenge `conn` may sign once in a {@link claimHandover}. */
  handoverChallenge(conn: ClientConnection): string {
    const value = toBase64Url(crypto.getRandomValues(new Uint8Array(32)));
    this.#challenges.set(conn, { value, expiresAt: this.#deps.clock.now() + CHALLENGE_TTL_MS });
    return value;
  }

  /**
   * A deferred hand-over: `conn` (not logged in) presents an old session's token of the user,
   * superseded and possibly expired, and the user's signature over the challenge this server gave
   * it. If the signature verifies with the account's public key and a newer session of the user
   * is known and online, `conn` enters a hand-over grace toward that session, exactly as a
   * connection superseded while online; resolves the grace in ms. Otherwise throws a
   * {@link UserError} and changes nothing (but the challenge, which is used up):
   * `not_authenticated` (no or a stale challenge, a token not genuine, a bad signature, a logged
   * in connection), `not_superseded` (no newer session known), `peer_offline` (the new session
   * is not online: try later) or `unavailable`.
   */
  async claimHandover(conn: ClientConnection, claim: HandoverClaim): Promise<number> {
    const { local, tokens, clock, log, metrics } = this.#deps;
    const challenge = this.#challenges.get(conn);
    this.#challenges.delete(conn);
    const refuse = (code: "not_authenticated" | "not_superseded" | "peer_offline", m: string) => {
      metrics.inc("p2pchat_handover_claims_total", { result: code });
      return new UserError(code, m);
    };
    if (local.sessionOf(conn) || local.graceOf(conn)) {
      throw refuse(
        "not_authenticated",
        "This connection is logged in: it cannot claim a hand-over",
      );
    }
    if (
      !challenge || challenge.value !== claim.challenge || challenge.expiresAt <= clock.now()
    ) {
      throw refuse("not_authenticated", "Ask for a new hand-over challenge and sign that one");
    }
    let claims: SessionClaims;
    try {
      claims = await tokens.verify(claim.token, clock.now(), { allowExpired: true });
    } catch (err) {
      if (err instanceof TokenError) throw refuse("not_authenticated", err.message);
      throw err;
    }
    const username = claims.username;
    const account = await this.#accountForToken(claims);
    this.#learn(username, account.session);
    if (!account.keys || this.#hasLostName(claims, account)) {
      throw refuse("not_authenticated", "This session cannot hand a history over");
    }
    let verified = false;
    try {
      const key = await importPublicKey(account.keys.signing, "RSA-PSS");
      verified = await verifyHandoverClaim(
        username,
        claim.token,
        claim.challenge,
        claim.signature,
        key,
      );
    } catch {
      verified = false;
    }
    if (!verified) {
      throw refuse("not_authenticated", "The claim's signature does not verify with your key");
    }
    const newest = this.#registry.newest(username);
    if (!newest || !isNewer(newest, claims)) {
      throw refuse("not_superseded", NOT_SUPERSEDED_MESSAGE);
    }
    if (!this.#deps.presence.isOnline(username)) {
      throw refuse(
        "peer_offline",
        "Your new session is not online: the history moves when it is",
      );
    }
    // Checked again: the connection may have logged in while the checks awaited.
    if (local.sessionOf(conn) || local.graceOf(conn)) {
      throw refuse(
        "not_authenticated",
        "This connection is logged in: it cannot claim a hand-over",
      );
    }
    metrics.inc("p2pchat_handover_claims_total", { result: "admitted" });
    this.#accountOf.set(conn, claims.account ?? accountVersion(account));
    local.beginGrace(conn, { username, current: newest });
    this.#graceTimers.set(
      conn,
      clock.setTimeout(() => this.#endGrace(conn, "grace over"), this.#graceMs),
    );
    this.#graceProgress.set(conn, { beganAt: clock.now(), done: 0 });
    log("handover_claimed", { username, graceMs: this.#graceMs });
    return this.#graceMs;
  }

  /**
   * A frame for `username` from another server (a cluster `deliver`): a `session_started`
   * notice is taken here; anything else goes to the local connection it is for. False if none.
   */
  receive(username: string, frame: ServerFrame): boolean {
    if (frame.type === "session_started") {
      this.#newSession(username, { sessionId: frame.sessionId, issuedAt: frame.issuedAt });
      return true;
    }
    if (frame.type === "session_ended") {
      this.#registry.end(username, { sessionId: frame.sessionId, issuedAt: frame.issuedAt });
      return true;
    }
    return this.#deps.local.deliver(username, frame);
  }

  /**
   * The account a genuine token names, read from the ring now (not a cache: its newest session
   * may have changed on another server). `unavailable` when the servers holding its copies
   * cannot be reached (the ring answers "no such account" only when most of them answered);
   * `unknown_account` when the ring says there is none.
   */
  async #accountForToken(claims: Pick<SessionClaims, "username">): Promise<AccountRecord> {
    const account = await this.#deps.accounts.current(claims.username);
    if (account) return account;
    this.#deps.metrics.inc("p2pchat_logins_total", { result: "unknown_account" });
    throw new UserError("unknown_account", UNKNOWN_ACCOUNT_MESSAGE);
  }

  /**
   * Whether `claims` belong to a registration that lost its name to an older one: its tokens are
   * refused everywhere, since every server reads the winner (its cache follows the ring's
   * replacements).
   */
  #hasLostName(
    claims: Pick<SessionClaims, "username" | "account">,
    account: AccountRecord,
  ): boolean {
    return claims.account !== undefined &&
      (claims.account !== accountVersion(account) ||
        this.#deps.accounts.hasLost(claims.username, claims.account));
  }

  /** A newer session of the user arrived while this one was being bound: it was superseded. */
  #refuseIfOvertaken(conn: ClientConnection, claims: SessionClaims): void {
    if (this.#deps.local.sessionOf(conn)?.session.sessionId === claims.sessionId) return;
    throw new UserError("not_authenticated", SUPERSEDED_MESSAGE);
  }

  /** The answer of a login, resume or refresh; wrapped private keys only when `keys` is given. */
  #grant(
    claims: SessionClaims,
    token: string,
    account: AccountRecord,
    keys?: AccountKeys,
  ): SessionGrant {
    const publicKeys = account.keys
      ? { encryption: account.keys.encryption, signing: account.keys.signing }
      : undefined;
    return {
      username: claims.username,
      token,
      expiresAt: claims.expiresAt,
      servers: this.#deps.membership.liveBrowserUrls(),
      ...(keys ? { keys } : {}),
      ...(publicKeys ? { publicKeys } : {}),
    };
  }

  /**
   * Makes `conn` the session of the claims' user. Resolves once the user's presence record is
   * on the ring (at most `presenceWriteWaitMs`).
   */
  async #bind(conn: ClientConnection, claims: SessionClaims): Promise<void> {
    const { local, presence, clock } = this.#deps;
    const username = claims.username;
    const wasOnline = presence.isOnline(username);
    const ended = local.bind(conn, username, claims);
    if (ended) this.#sessionEnded(ended.username);
    if (!wasOnline) local.broadcastPresence(username, true);
    let timer: TimerHandle | undefined;
    await Promise.race([
      presence.publish(username, true),
      new Promise((r) => timer = clock.setTimeout(() => r(undefined), this.#writeWaitMs)),
    ]);
    clock.clearTimeout(timer);
  }

  /** `username` no longer has a session on this connection: presence follows. */
  #sessionEnded(username: string): void {
    const { presence, local } = this.#deps;
    if (!presence.isOnline(username)) local.broadcastPresence(username, false);
    void presence.publish(username, false);
  }

  /**
   * `stamp` is a session of `username` this server just heard of (a login or resume here, or a
   * notice from another server). Every local connection of a session older than the newest known
   * one is told `superseded` and leaves the user's session; it then stays open for the grace, or
   * is closed at once when the grace is 0. Connections already in a grace for an older session
   * are closed: a hand-over goes to the newest session only. Two logins racing on this server
   * thus end with the newer one as the session, whichever bound first.
   */
  #newSession(username: string, stamp: SessionStamp): void {
    const { local, log, metrics } = this.#deps;
    this.#registry.observe(username, stamp);
    const newest = this.#registry.newest(username) ?? stamp;
    for (const [conn, grace] of local.graces()) {
      if (grace.username === username && isNewer(newest, grace.current)) {
        this.#endGrace(conn, "superseded again");
      }
    }
    for (const conn of local.boundTo(username)) {
      const bound = local.sessionOf(conn);
      if (!bound || !isNewer(newest, bound.session)) continue;
      log("session_superseded", { username });
      metrics.inc("p2pchat_sessions_superseded_total");
      if (this.#graceMs > 0) {
        this.#beginGrace(conn, username, newest);
        continue;
      }
      conn.send({ v: 1, type: "superseded", message: SUPERSEDED_MESSAGE });
      conn.close(SUPERSEDED_CLOSE_CODE, "signed in elsewhere");
      this.disconnect(conn);
    }
  }

  /**
   * Moves a superseded connection into its hand-over grace: out of the user's session, told
   * `superseded` with the grace in `handoverMs`, and closed when the grace ends.
   */
  #beginGrace(conn: ClientConnection, username: string, current: SessionStamp): void {
    const { local, clock, log } = this.#deps;
    const ended = local.unbind(conn);
    if (ended) this.#sessionEnded(ended.username);
    local.beginGrace(conn, { username, current });
    this.#graceTimers.set(
      conn,
      clock.setTimeout(() => this.#endGrace(conn, "grace over"), this.#graceMs),
    );
    this.#graceProgress.set(conn, { beganAt: clock.now(), done: 0 });
    log("handover_started", { username, graceMs: this.#graceMs });
    conn.send({
      v: 1,
      type: "superseded",
      message: SUPERSEDED_MESSAGE,
      handoverMs: this.#graceMs,
    });
  }

  /**
   * A connection in its grace reports `done` rows handed over: if that is more than before, its
   * grace ends a full grace from now, but no later than `handoverMaxMs` after it began.
   */
  #progress(conn: ClientConnection, done: unknown): void {
    const { clock, local, log } = this.#deps;
    const progress = this.#graceProgress.get(conn);
    const timer = this.#graceTimers.get(conn);
    if (!progress || timer === undefined) return;
    if (typeof done !== "number" || !Number.isSafeInteger(done) || done <= progress.done) return;
    progress.done = done;
    const endsAt = Math.min(progress.beganAt + this.#graceMaxMs, clock.now() + this.#graceMs);
    log("handover_extended", {
      username: local.graceOf(conn)?.username,
      done,
      endsInMs: endsAt - clock.now(),
    });
    clock.clearTimeout(timer);
    this.#graceTimers.set(
      conn,
      clock.setTimeout(
        () => this.#endGrace(conn, "grace over"),
        Math.max(0, endsAt - clock.now()),
      ),
    );
  }

  /** Ends a connection's hand-over grace: closes it as superseded. */
  #endGrace(conn: ClientConnection, reason: string): void {
    const { local, log } = this.#deps;
    if (!local.has(conn)) return;
    log("handover_ended", { username: local.graceOf(conn)?.username, reason });
    conn.close(SUPERSEDED_CLOSE_CODE, "signed in elsewhere");
    this.disconnect(conn);
  }

  /**
   * Records how late this check ran after the previous one (the event loop was busy or the
   * process not scheduled), or how far behind socket reads are, if more: frames clients sent
   * meanwhile were read only afterwards.
   */
  #checkLag(): void {
    const { clock, metrics } = this.#deps;
    const now = clock.now();
    const late = Math.max(now - this.#lastProbe - this.#probePeriod, this.#deps.ioLag?.() ?? 0);
    this.#lastProbe = now;
    metrics.set("p2pchat_event_loop_lag_ms", Math.max(0, late));
    if (late > 0) this.#stalls.push([now, late]);
    // Long enough for peers to suspect this server, and for clients to notice.
    if (late >= 1000) this.#deps.log("event_loop_stalled", { ms: late });
    const keepFrom = now - 4 * this.#presenceTimeoutMs;
    let old = 0;
    while (old < this.#stalls.length && this.#stalls[old]![0] < keepFrom) old++;
    if (old > 0) this.#stalls.splice(0, old);
  }

  /**
   * The longest stall of this server since `since`: a client's frames were delayed at most that
   * much, so its silence is only counted past it.
   */
  #stalledSince(since: number, suffixMax: number[]): number {
    // The first stall that ended after `since` (binary search: they are in time order).
    let lo = 0, hi = this.#stalls.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#stalls[mid]![0] > since) hi = mid;
      else lo = mid + 1;
    }
    return lo < suffixMax.length ? suffixMax[lo]! : 0;
  }

  /**
   * Closes connections silent for the timeout. Silence is counted in time this server listened:
   * a connection is not closed for frames its own stalled event loop had not yet read (its
   * deadline moves by the longest stall since its last frame); a frozen client is closed the
   * timeout after its last frame, plus this server's longest stall since.
   */
  #sweep(): void {
    const { local, clock, log } = this.#deps;
    const now = clock.now();
    const cutoff = now - this.#presenceTimeoutMs;
    const suffixMax: number[] = new Array(this.#stalls.length);
    let max = 0;
    for (let i = this.#stalls.length - 1; i >= 0; i--) {
      max = Math.max(max, this.#stalls[i]![1]);
      suffixMax[i] = max;
    }
    for (const conn of local.connections()) {
      if (conn.lastSeen >= cutoff) continue;
      const stalled = this.#stalledSince(conn.lastSeen, suffixMax);
      if (conn.lastSeen >= cutoff - stalled) continue;
      if (local.graceOf(conn)) {
        this.#endGrace(conn, "silent");
        continue;
      }
      log("session_timed_out", {
        username: local.sessionOf(conn)?.username,
        silentMs: now - conn.lastSeen,
        stalledMs: stalled,
      });
      conn.close(4000, "heartbeat timeout");
      this.disconnect(conn);
    }
  }
}
