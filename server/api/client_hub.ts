/**
 * The server's side of browser sessions: one WebSocket per tab, each frame validated before it
 * touches state, bad frames answered with a typed error and counted. It maps frames to calls on
 * the cluster (register, deliver, presence) and holds no placement logic of its own.
 *
 * One active session per user: a login issues a new session, tells older local sessions of the
 * same user `superseded`, and tells every other live server (a cluster `deliver` of a
 * `session_started` notice, which the receiving hub consumes); a resume with an older session's
 * token is refused. A superseded connection leaves the user's session at once but stays open for
 * a bounded hand-over grace, in which it may only exchange signals with the new session (routed
 * as `handover_signal` frames between servers), so the old device can hand its history over an
 * encrypted data channel (DESIGN §4); then it is closed. Abuse controls: failed logins are
 * limited per username and per address, and frames per connection (a sustained flood closes the
 * socket).
 */
import { compare, hash } from "bcryptjs";
import {
  ABUSE_CLOSE_CODE,
  type AccountRecord,
  type ClientFrame,
  type ErrorCode,
  errorFrame,
  parseClientFrame,
  PRESENCE_TIMEOUT_MS,
  ProtocolError,
  reservedSignalKey,
  type ServerFrame,
  SUPERSEDED_CLOSE_CODE,
} from "../../shared/mod.ts";
import type { Metrics } from "./metrics.ts";
import {
  callPeer,
  type Cluster,
  type Hmac,
  type LocalSessions,
  type Log,
  UnavailableError,
} from "../cluster/mod.ts";
import type { MailboxFrames } from "./mailbox_frames.ts";
import { type SessionClaims, TokenError, type Tokens } from "./tokens.ts";
import { type AbuseLimits, DEFAULT_LIMITS, LoginLimiter, TokenBucket } from "./rate_limit.ts";
import { isNewer, SessionRegistry, type SessionStamp } from "./sessions.ts";

/** Longest a login waits for its presence record to be written on the ring, in ms. */
const PRESENCE_WRITE_WAIT_MS = 2_000;

/** What the old client is told when a newer login replaces its session. */
export const SUPERSEDED_MESSAGE = "Signed in elsewhere: this session was replaced by a newer login";

/** How long a superseded connection may stay open to hand its history over, in ms. */
export const HANDOVER_GRACE_MS = 30_000;

/** What a connection in its hand-over grace is told when it asks for anything but a self-signal. */
export const HANDOVER_ONLY_MESSAGE =
  "Signed in elsewhere: this connection can only hand your history to your new device; " +
  "log in again to use this device";

/** Collaborators of a {@link ClientHub}. */
export interface ClientHubDeps {
  metrics: Metrics;
  tokens: Tokens;
  log: Log;
  /** Signs the supersede notices sent to other servers. */
  hmac: Hmac;
  /** Clock for the rate limits. @default Date.now */
  clock?: () => number;
}

/** Configuration of a {@link ClientHub}. */
export interface ClientHubOptions {
  /** bcrypt cost factor for stored secrets. @default 10 */
  bcryptCost?: number;
  /** A session silent this long is closed, in ms. @default PRESENCE_TIMEOUT_MS */
  presenceTimeoutMs?: number;
  /** Abuse limits; missing fields take {@link DEFAULT_LIMITS}. */
  limits?: Partial<AbuseLimits>;
  /**
   * How long a superseded connection stays open, signaling only with the user's new session, so
   * the old device can hand its history over (DESIGN §4); 0 closes it at once.
   * @default HANDOVER_GRACE_MS
   */
  handoverGraceMs?: number;
}

/** A superseded connection in its hand-over grace. */
interface Handover {
  username: string;
  /** The session that superseded this connection's: the only one it may signal. */
  current: SessionStamp;
  /** Ends the grace (closes the connection) at its deadline. */
  timer: ReturnType<typeof setTimeout>;
}

interface Connection {
  socket: WebSocket;
  username: string | undefined;
  /** The session this connection is bound to, once logged in or resumed. */
  session: SessionStamp | undefined;
  /** The client's address (for login limits). */
  address: string;
  lastSeen: number;
  frames: TokenBucket;
  strikes: TokenBucket;
  /** When the last `rate_limited` error was sent (at most one per second). */
  lastLimitedAt: number;
  /**
   * Set once the connection is superseded and in its hand-over grace: it is then no longer the
   * user's session (`username` and `session` are cleared) and may only signal the new session.
   */
  handover?: Handover;
}

/** All browser sessions on this server; implements the cluster's view of local sessions. */
export class ClientHub implements LocalSessions {
  #deps: ClientHubDeps;
  #cluster: Cluster | undefined;
  #mailbox: MailboxFrames | undefined;
  #bcryptCost: number;
  #presenceTimeoutMs: number;
  #connections = new Set<Connection>();
  #byUser = new Map<string, Connection>();
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #clock: () => number;
  #limits: AbuseLimits;
  #logins: LoginLimiter;
  #sessions = new SessionRegistry();
  #handoverGraceMs: number;
  /** Connections in their hand-over grace. */
  #handovers = new Set<Connection>();

  /** Creates the hub; {@link bind} it to the cluster before accepting sockets. */
  constructor(deps: ClientHubDeps, options: ClientHubOptions = {}) {
    this.#deps = deps;
    this.#bcryptCost = options.bcryptCost ?? 10;
    this.#presenceTimeoutMs = options.presenceTimeoutMs ?? PRESENCE_TIMEOUT_MS;
    this.#handoverGraceMs = options.handoverGraceMs ?? HANDOVER_GRACE_MS;
    this.#clock = deps.clock ?? Date.now;
    this.#limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.#logins = new LoginLimiter(this.#limits, this.#clock);
    const m = deps.metrics;
    m.describe("p2pchat_ws_connections", "gauge", "Open browser WebSockets");
    m.describe("p2pchat_sessions", "gauge", "Logged-in users on this server");
    m.describe("p2pchat_invalid_frames_total", "counter", "Frames rejected by validation");
    m.describe("p2pchat_relayed_total", "counter", "Frames relayed between users, by kind");
    m.describe("p2pchat_logins_total", "counter", "Login attempts, by result");
    m.describe("p2pchat_registrations_total", "counter", "Registrations, by result");
    m.describe(
      "p2pchat_rate_limited_total",
      "counter",
      "Requests refused by a rate limit, by kind",
    );
    m.describe(
      "p2pchat_sessions_superseded_total",
      "counter",
      "Sessions replaced by a newer login",
    );
  }

  /** Connects the hub to the cluster that routes frames between servers. */
  /** Serves offline-mailbox frames through `mailbox` (without it they get `unavailable`). */
  attachMailbox(mailbox: MailboxFrames): void {
    this.#mailbox = mailbox;
  }

  bind(cluster: Cluster): void {
    this.#cluster = cluster;
    this.#sweeper = setInterval(() => this.#sweep(), Math.min(5000, this.#presenceTimeoutMs / 3));
  }

  /** Closes every socket and stops the presence sweeper. */
  close(): void {
    clearInterval(this.#sweeper);
    for (const c of this.#handovers) clearTimeout(c.handover?.timer);
    this.#handovers.clear();
    for (const c of this.#connections) c.socket.close(1001, "server shutting down");
  }

  /** Takes over an upgraded WebSocket from the client at `address` (its IP). */
  accept(socket: WebSocket, address = "unknown"): void {
    const conn: Connection = {
      socket,
      username: undefined,
      session: undefined,
      address,
      lastSeen: Date.now(),
      frames: new TokenBucket(this.#limits.framesPerConnection, this.#clock),
      strikes: new TokenBucket(this.#limits.droppedFramesBeforeClose, this.#clock),
      lastLimitedAt: -Infinity,
    };
    this.#connections.add(conn);
    this.#gauge();
    socket.onmessage = (event) => {
      conn.lastSeen = Date.now();
      if (!this.#admitFrame(conn)) return;
      this.#onFrame(conn, event.data).catch((err) => {
        if (err instanceof UnavailableError) {
          // The ring could not answer (repairing, or too few servers): nothing was changed.
          const message = "The servers cannot answer right now: try again shortly";
          return this.#fail(conn, "unavailable", message, reqIdOf(event.data));
        }
        this.#deps.log("frame_handler_failed", { error: String(err) });
        this.#send(conn, { v: 1, type: "error", code: "internal", message: "Internal error" });
      });
    };
    socket.onclose = () => this.#drop(conn);
    socket.onerror = () => this.#drop(conn);
  }

  onlineUsernames(): string[] {
    return [...this.#byUser.keys()];
  }

  hasSession(username: string): boolean {
    return this.#byUser.has(username);
  }

  deliverLocal(username: string, frame: ServerFrame): boolean {
    const notice = supersedeNotice(frame);
    if (notice) {
      this.#newSession(username, notice);
      return true;
    }
    if (frame.type === "handover_signal") return this.#deliverHandoverSignal(username, frame);
    const conn = this.#byUser.get(username);
    if (!conn) return false;
    return this.#send(conn, frame);
  }

  presenceChanged(username: string, online: boolean): void {
    for (const conn of this.#connections) {
      if (conn.username && conn.username !== username) {
        this.#send(conn, { v: 1, type: "presence", username, online });
      }
    }
  }

  #send(conn: Connection, frame: ServerFrame): boolean {
    if (conn.socket.readyState !== WebSocket.OPEN) return false;
    conn.socket.send(JSON.stringify(frame));
    return true;
  }

  #fail(conn: Connection, code: ErrorCode, message: string, reqId?: number): void {
    const frame: ServerFrame = { v: 1, type: "error", code, message };
    if (reqId !== undefined) frame.reqId = reqId;
    this.#send(conn, frame);
  }

  /** Charges one frame to the connection; false (and maybe closes it) when over the limit. */
  #admitFrame(conn: Connection): boolean {
    if (conn.frames.take()) return true;
    this.#deps.metrics.inc("p2pchat_rate_limited_total", { kind: "frame" });
    if (!conn.strikes.take()) {
      this.#deps.log("connection_closed_for_abuse", {
        username: conn.username,
        address: conn.address,
      });
      try {
        conn.socket.close(ABUSE_CLOSE_CODE, "too many frames");
      } catch { /* already closing */ }
      this.#drop(conn);
      return false;
    }
    const now = this.#clock();
    if (now - conn.lastLimitedAt >= 1000) {
      conn.lastLimitedAt = now;
      const seconds = Math.max(1, Math.ceil(conn.frames.retryAfterMs() / 1000));
      this.#fail(
        conn,
        "rate_limited",
        `Too many frames: slow down (at most ${this.#limits.framesPerConnection.perSecond} per second); retry after ${seconds} s`,
      );
    }
    return false;
  }

  async #onFrame(conn: Connection, data: unknown): Promise<void> {
    let frame: ClientFrame;
    try {
      frame = parseClientFrame(data);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.#deps.metrics.inc("p2pchat_invalid_frames_total", { source: "client" });
      this.#send(conn, errorFrame(err, reqIdOf(data)));
      return;
    }
    const cluster = this.#cluster!;
    if (conn.handover) return await this.#onHandoverFrame(conn, conn.handover, frame);
    switch (frame.type) {
      case "heartbeat":
        return;
      case "ping":
        this.#send(conn, { v: 1, type: "pong", reqId: frame.reqId });
        return;
      case "register":
        return await this.#register(conn, frame);
      case "login":
        return await this.#login(conn, frame);
      case "resume": {
        try {
          const claims = await this.#deps.tokens.verify(frame.token);
          const account = await this.#cluster!.account(claims.username);
          if (!account) {
            return this.#fail(
              conn,
              "not_authenticated",
              "Unknown account: please log in again",
              frame.reqId,
            );
          }
          if (!this.#sessions.isCurrent(claims.username, claims)) {
            this.#deps.metrics.inc("p2pchat_logins_total", { result: "superseded_token" });
            return this.#fail(conn, "not_authenticated", SUPERSEDED_MESSAGE, frame.reqId);
          }
          await this.#bindUser(conn, claims);
          this.#newSession(claims.username, claims);
          this.#send(conn, {
            v: 1,
            type: "session",
            reqId: frame.reqId,
            username: claims.username,
            token: frame.token,
            expiresAt: claims.expiresAt,
            servers: cluster.liveServers(),
            ...(account.keys ? { keys: account.keys } : {}),
          });
        } catch (err) {
          if (!(err instanceof TokenError)) throw err;
          this.#fail(conn, err.code, err.message, frame.reqId);
        }
        return;
      }
    }
    const me = conn.username;
    if (!me) {
      const reqId = "reqId" in frame ? frame.reqId : undefined;
      return this.#fail(conn, "not_authenticated", "Log in first", reqId);
    }
    if (frame.type === "signal" && this.#refuseReserved(conn, frame.data)) return;
    switch (frame.type) {
      case "contacts":
        this.#send(conn, {
          v: 1,
          type: "contacts",
          reqId: frame.reqId,
          users: (await cluster.directory()).filter((u) => u !== me).map((username) => ({
            username,
            online: cluster.isOnline(username),
          })),
        });
        return;
      case "get_keys": {
        const keys = (await cluster.account(frame.username))?.keys;
        if (!keys) {
          return this.#fail(
            conn,
            "unknown_user",
            `No public keys for "${frame.username}": the user does not exist or registered without keys`,
            frame.reqId,
          );
        }
        this.#send(conn, {
          v: 1,
          type: "keys",
          reqId: frame.reqId,
          username: frame.username,
          encryption: keys.encryption,
          signing: keys.signing,
        });
        return;
      }
      case "mail_send":
      case "mail_fetch":
      case "mail_ack":
        if (!this.#mailbox) {
          return this.#fail(
            conn,
            "unavailable",
            "Offline messages are not available yet",
            frame.reqId,
          );
        }
        this.#send(conn, await this.#mailbox.handle(me, frame));
        return;
      case "signal":
      case "relay": {
        if (frame.type === "signal" && frame.to === me && conn.session) {
          // To oneself: for the connections this session superseded, in their hand-over grace.
          return await this.#signalHandover(conn, me, {
            v: 1,
            type: "handover_signal",
            toward: "handover",
            current: conn.session.sessionId,
            data: frame.data,
          });
        }
        const out: ServerFrame = frame.type === "signal"
          ? { v: 1, type: "signal", from: me, data: frame.data }
          : { v: 1, type: "relay", from: me, payload: frame.payload };
        const delivered = await cluster.deliver(frame.to, out);
        this.#deps.metrics.inc("p2pchat_relayed_total", {
          kind: frame.type,
          result: delivered ? "delivered" : "offline",
        });
        if (!delivered) this.#fail(conn, "peer_offline", `${frame.to} is offline`);
        return;
      }
    }
  }

  async #register(conn: Connection, frame: Extract<ClientFrame, { type: "register" }>) {
    const { metrics } = this.#deps;
    const existing = await this.#accountOrUnavailable(conn, frame.username, frame.reqId);
    if (existing === null) return;
    if (existing) {
      metrics.inc("p2pchat_registrations_total", { result: "taken" });
      return this.#fail(
        conn,
        "username_taken",
        `Username "${frame.username}" is taken: choose another`,
        frame.reqId,
      );
    }
    const account: AccountRecord = {
      username: frame.username,
      hash: await hash(frame.secret, this.#bcryptCost),
      createdAt: Date.now(),
    };
    if (frame.keys) account.keys = frame.keys;
    try {
      if (await this.#cluster!.register(account)) {
        metrics.inc("p2pchat_registrations_total", { result: "ok" });
        this.#send(conn, { v: 1, type: "ok", reqId: frame.reqId });
      } else {
        metrics.inc("p2pchat_registrations_total", { result: "taken" });
        this.#fail(
          conn,
          "username_taken",
          `Username "${frame.username}" is taken: choose another`,
          frame.reqId,
        );
      }
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw err;
      metrics.inc("p2pchat_registrations_total", { result: "unavailable" });
      this.#fail(
        conn,
        "unavailable",
        "No server could store the account: try again shortly",
        frame.reqId,
      );
    }
  }

  /**
   * The account of `username` from the ring; when the ring cannot answer now, the client is told
   * `unavailable` and null is returned.
   */
  async #accountOrUnavailable(
    conn: Connection,
    username: string,
    reqId: number,
  ): Promise<AccountRecord | undefined | null> {
    try {
      return await this.#cluster!.account(username);
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw err;
      this.#fail(
        conn,
        "unavailable",
        "Accounts cannot be read right now: try again shortly",
        reqId,
      );
      return null;
    }
  }

  async #login(conn: Connection, frame: Extract<ClientFrame, { type: "login" }>) {
    const blockedMs = this.#logins.blockedForMs(frame.username, conn.address);
    if (blockedMs > 0) {
      this.#deps.metrics.inc("p2pchat_logins_total", { result: "rate_limited" });
      this.#deps.metrics.inc("p2pchat_rate_limited_total", { kind: "login" });
      return this.#fail(
        conn,
        "rate_limited",
        `Too many failed logins: try again in ${Math.ceil(blockedMs / 1000)} s`,
        frame.reqId,
      );
    }
    const account = await this.#accountOrUnavailable(conn, frame.username, frame.reqId);
    if (account === null) return;
    const ok = account !== undefined && await compare(frame.secret, account.hash);
    this.#deps.metrics.inc("p2pchat_logins_total", { result: ok ? "ok" : "rejected" });
    if (!ok) {
      this.#logins.failed(frame.username, conn.address);
      return this.#fail(
        conn,
        "wrong_credentials",
        "Unknown username or wrong password",
        frame.reqId,
      );
    }
    const { token, claims } = await this.#deps.tokens.issue(frame.username);
    await this.#bindUser(conn, claims);
    this.#newSession(frame.username, claims);
    void this.#announceSession(frame.username, claims);
    this.#send(conn, {
      v: 1,
      type: "session",
      reqId: frame.reqId,
      username: frame.username,
      token,
      expiresAt: claims.expiresAt,
      servers: this.#cluster!.liveServers(),
      ...(account.keys ? { keys: account.keys } : {}),
    });
  }

  /**
   * `stamp` is a session of `username` this server just heard of (a login or resume here, or a
   * notice from another server): if it is the newest, every local connection of an older session
   * of that user is told `superseded` and leaves the user's session at once; it then stays open
   * for the hand-over grace (signals to the new session only, see {@link #beginHandover}), or is
   * closed at once when the grace is 0. Connections already in a grace for an older session are
   * closed: a hand-over goes to the newest session only.
   */
  #newSession(username: string, stamp: SessionStamp): void {
    if (!this.#sessions.observe(username, stamp)) return;
    for (const conn of [...this.#connections]) {
      const handover = conn.handover;
      if (handover) {
        if (handover.username === username && isNewer(stamp, handover.current)) {
          this.#endHandover(conn, "superseded again");
        }
        continue;
      }
      if (conn.username !== username || !conn.session || !isNewer(stamp, conn.session)) continue;
      this.#deps.log("session_superseded", { username });
      this.#deps.metrics.inc("p2pchat_sessions_superseded_total");
      if (this.#handoverGraceMs > 0) {
        this.#beginHandover(conn, username, stamp);
        continue;
      }
      this.#send(conn, { v: 1, type: "superseded", message: SUPERSEDED_MESSAGE });
      try {
        conn.socket.close(SUPERSEDED_CLOSE_CODE, "signed in elsewhere");
      } catch { /* already closing */ }
      this.#drop(conn);
    }
  }

  /**
   * Moves a superseded connection into its hand-over grace: out of the user map (no presence,
   * mailbox, contacts or signaling to others; the cluster sees the user's new session only),
   * told `superseded` with the grace in `handoverMs`, and closed when the grace ends.
   */
  #beginHandover(conn: Connection, username: string, current: SessionStamp): void {
    this.#unbind(conn);
    const grace = this.#handoverGraceMs;
    conn.handover = {
      username,
      current: { sessionId: current.sessionId, issuedAt: current.issuedAt },
      timer: setTimeout(() => this.#endHandover(conn, "grace over"), grace),
    };
    this.#handovers.add(conn);
    this.#deps.log("handover_started", { username, graceMs: grace });
    this.#send(conn, {
      v: 1,
      type: "superseded",
      message: SUPERSEDED_MESSAGE,
      handoverMs: grace,
    });
  }

  /** Ends a connection's hand-over grace: closes it as superseded. */
  #endHandover(conn: Connection, reason: string): void {
    const handover = conn.handover;
    if (handover) clearTimeout(handover.timer);
    this.#handovers.delete(conn);
    if (!this.#connections.has(conn)) return;
    this.#deps.log("handover_ended", { username: handover?.username, reason });
    try {
      conn.socket.close(SUPERSEDED_CLOSE_CODE, "signed in elsewhere");
    } catch { /* already closing */ }
    this.#drop(conn);
  }

  /**
   * A frame from a connection in its hand-over grace: heartbeats, pings and signals to the user
   * himself (which go to the session that superseded it) pass; anything else is refused.
   */
  async #onHandoverFrame(conn: Connection, handover: Handover, frame: ClientFrame): Promise<void> {
    if (frame.type === "heartbeat") return;
    if (frame.type === "ping") {
      this.#send(conn, { v: 1, type: "pong", reqId: frame.reqId });
      return;
    }
    if (frame.type !== "signal" || frame.to !== handover.username) {
      const reqId = "reqId" in frame ? frame.reqId : undefined;
      return this.#fail(conn, "not_authenticated", HANDOVER_ONLY_MESSAGE, reqId);
    }
    if (this.#refuseReserved(conn, frame.data)) return;
    await this.#signalHandover(conn, handover.username, {
      v: 1,
      type: "handover_signal",
      toward: "current",
      current: handover.current.sessionId,
      data: frame.data,
    });
  }

  /** Refuses signal data carrying a key reserved for the servers; true if it did. */
  #refuseReserved(conn: Connection, data: Record<string, unknown>): boolean {
    const key = reservedSignalKey(data);
    if (key === undefined) return false;
    this.#deps.metrics.inc("p2pchat_invalid_frames_total", { source: "client" });
    this.#fail(conn, "bad_frame", `Signal data must not carry "${key}": that key is reserved`);
    return true;
  }

  /**
   * Routes a self-addressed signal of a hand-over, wherever the other side's connection is: this
   * server, the user's home server (toward the current session), or any live server (toward the
   * connections in their grace, which no presence lists). Tells the sender when nobody took it.
   */
  async #signalHandover(
    conn: Connection,
    username: string,
    frame: Extract<ServerFrame, { type: "handover_signal" }>,
  ): Promise<void> {
    const cluster = this.#cluster!;
    let delivered = frame.toward === "current"
      ? await cluster.deliver(username, frame)
      : this.deliverLocal(username, frame);
    // Toward the current session, presence may lag right after the login: ask every server.
    if (!delivered) delivered = await this.#deliverToOthers(username, frame);
    this.#deps.metrics.inc("p2pchat_relayed_total", {
      kind: "handover_signal",
      result: delivered ? "delivered" : "offline",
    });
    if (!delivered) {
      this.#fail(
        conn,
        "peer_offline",
        frame.toward === "current"
          ? "Your new session is not connected: the history cannot be handed over"
          : "No other device of yours is handing its history over",
      );
    }
  }

  /** Delivers `frame` to `username` on every other live server; true if any took it. */
  async #deliverToOthers(username: string, frame: ServerFrame): Promise<boolean> {
    const cluster = this.#cluster!;
    const others = cluster.liveServers().filter((s) => s !== cluster.self);
    const answers = await Promise.allSettled(others.map(async (server) => {
      try {
        // "peer_offline" is the normal answer of a server without such a connection.
        const res = await callPeer(
          this.#deps.hmac,
          server,
          { v: 1, type: "deliver", to: username, frame },
          2000,
        );
        return res.type === "ok";
      } catch (err) {
        this.#deps.log("session_deliver_failed", {
          server,
          username,
          type: frame.type,
          error: String(err),
        });
        return false;
      }
    }));
    return answers.some((a) => a.status === "fulfilled" && a.value);
  }

  /**
   * Hands a self-addressed signal to the connection it is for, as a plain `signal` from the user:
   * the current session (if it is the one named), or the connections in their grace that this
   * session superseded.
   */
  #deliverHandoverSignal(
    username: string,
    frame: Extract<ServerFrame, { type: "handover_signal" }>,
  ): boolean {
    const out: ServerFrame = { v: 1, type: "signal", from: username, data: frame.data };
    if (frame.toward === "current") {
      const conn = this.#byUser.get(username);
      if (!conn || conn.session?.sessionId !== frame.current) return false;
      return this.#send(conn, out);
    }
    let delivered = false;
    for (const conn of this.#handovers) {
      const h = conn.handover;
      if (h?.username !== username || h.current.sessionId !== frame.current) continue;
      delivered = this.#send(conn, out) || delivered;
    }
    return delivered;
  }

  /** Tells every other live server that `username` has a new session. */
  async #announceSession(username: string, claims: SessionClaims): Promise<void> {
    await this.#deliverToOthers(username, {
      v: 1,
      type: "session_started",
      sessionId: claims.sessionId,
      issuedAt: claims.issuedAt,
    });
  }

  /**
   * Makes `conn` the session of the claims' user. Resolves once the user's presence record is
   * on the ring (at most {@link PRESENCE_WRITE_WAIT_MS}), so that when the client hears
   * `session`, other servers can already route to it.
   */
  async #bindUser(conn: Connection, claims: SessionClaims): Promise<void> {
    const username = claims.username;
    if (conn.username && conn.username !== username) this.#unbind(conn);
    conn.session = { sessionId: claims.sessionId, issuedAt: claims.issuedAt };
    const wasOnline = this.#cluster!.isOnline(username);
    conn.username = username;
    this.#byUser.set(username, conn);
    this.#gauge();
    if (!wasOnline) this.presenceChanged(username, true);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#cluster!.localPresence(username, true),
      new Promise((r) => timer = setTimeout(r, PRESENCE_WRITE_WAIT_MS)),
    ]);
    clearTimeout(timer);
  }

  #unbind(conn: Connection): void {
    const username = conn.username;
    if (!username || this.#byUser.get(username) !== conn) {
      conn.username = undefined;
      conn.session = undefined;
      return;
    }
    this.#byUser.delete(username);
    conn.username = undefined;
    conn.session = undefined;
    if (!this.#cluster!.isOnline(username)) this.presenceChanged(username, false);
    void this.#cluster!.localPresence(username, false);
  }

  #drop(conn: Connection): void {
    if (!this.#connections.delete(conn)) return;
    this.#unbind(conn);
    this.#gauge();
  }

  #sweep(): void {
    const cutoff = Date.now() - this.#presenceTimeoutMs;
    // Graces of connections that closed on their own need no timer any more.
    for (const conn of this.#handovers) {
      if (!this.#connections.has(conn)) this.#endHandover(conn, "closed by the client");
    }
    for (const conn of this.#connections) {
      if (conn.handover && conn.lastSeen < cutoff) {
        this.#endHandover(conn, "silent");
      } else if (conn.lastSeen < cutoff) {
        this.#deps.log("session_timed_out", { username: conn.username });
        try {
          conn.socket.close(4000, "heartbeat timeout");
        } catch { /* already closing */ }
        this.#drop(conn);
      }
    }
  }

  #gauge(): void {
    this.#deps.metrics.set("p2pchat_ws_connections", this.#connections.size);
    this.#deps.metrics.set("p2pchat_sessions", this.#byUser.size);
  }
}

/** The session stamp of a `session_started` notice from another server, if `frame` is one. */
function supersedeNotice(frame: ServerFrame): SessionStamp | undefined {
  if (frame.type !== "session_started") return undefined;
  return { sessionId: frame.sessionId, issuedAt: frame.issuedAt };
}

/** Best-effort reqId of a frame that failed validation, so the client can match the error. */
function reqIdOf(data: unknown): number | undefined {
  if (typeof data !== "string" || data.length > 65536) return undefined;
  try {
    const id = (JSON.parse(data) as { reqId?: unknown })?.reqId;
    return typeof id === "number" && Number.isSafeInteger(id) && id >= 0 ? id : undefined;
  } catch {
    return undefined;
  }
}
