/**
 * The browser's WebSocket session with its home server: request/response matched by `reqId` with
 * timeouts, heartbeats, pushed events (presence, signal, relay), and reconnection with backoff that
 * fails over through the cluster's `servers` list, resuming with the session token (valid on any
 * server of the cluster). A server that goes silent without closing the socket (frozen, or cut
 * off by the network) is noticed by liveness pings and left after `silentServerMs`. The token lives in per-tab storage (`sessionStorage`), because two tabs
 * of one browser may be two different users (DESIGN §1).
 *
 * Everything that touches the outside world — the socket constructor, the storage, the timers —
 * is passed in as {@link SessionDeps}, so the reconnect logic runs against fakes in unit tests.
 */
import {
  type AccountKeys,
  type ClientFrame,
  type ContactEntry,
  type ErrorCode,
  HEARTBEAT_INTERVAL_MS,
  type IceServer,
  type IncomingMail,
  type MailReceipt,
  type OutgoingMail,
  parseServerFrame,
  type PreviousSession,
  PROTOCOL_VERSION,
  type PublicKeys,
  type ServerFrame,
  type SignalData,
  SUPERSEDED_CLOSE_CODE,
} from "../shared/mod.ts";

/** Where the session stands, as shown in the header (`conn-status`). */
export type ConnectionStatus =
  /** No socket and not trying (before start, or after logout). */
  | "offline"
  /** Opening a socket (first attempt or reconnect). */
  | "connecting"
  /** Socket open, not logged in. */
  | "connected"
  /** Socket open and the session is authenticated. */
  | "online";

/** The minimal WebSocket surface the session uses (the browser's WebSocket satisfies it). */
export interface SocketLike {
  readonly readyState: number;
  send(text: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: Event) => void) | null;
  onclose: ((ev: CloseEvent) => void) | null;
  onerror: ((ev: Event) => void) | null;
  onmessage: ((ev: MessageEvent) => void) | null;
}

/** Key-value storage scoped to this tab (the browser's `sessionStorage` satisfies it). */
export interface TabStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** Handle of a timer. */
export type TimerId = ReturnType<typeof setTimeout>;

/** Timer functions, injectable so tests can drive time. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): TimerId;
  clearTimeout(id: TimerId): void;
  setInterval(fn: () => void, ms: number): TimerId;
  clearInterval(id: TimerId): void;
}

/** Collaborators of a {@link Session}. */
export interface SessionDeps {
  /** Opens a WebSocket to `url` (a `ws:`/`wss:` URL). */
  openSocket(url: string): SocketLike;
  /** Per-tab storage for the session token and the known server list. */
  storage: TabStorage;
  /** Timers; the global ones by default. */
  timers?: Timers;
}

/** Configuration of a {@link Session}. */
export interface SessionOptions {
  /** Base URL (http/https) of the home server, normally the page's origin. */
  homeServer: string;
  /** How long a request waits for its reply, in ms. @default 10000 */
  requestTimeoutMs?: number;
  /** Interval between heartbeats, in ms. @default HEARTBEAT_INTERVAL_MS */
  heartbeatIntervalMs?: number;
  /** First reconnect delay, in ms; doubles per failed attempt. @default 250 */
  reconnectMinMs?: number;
  /** Largest reconnect delay, in ms. @default 5000 */
  reconnectMaxMs?: number;
  /**
   * Period of the liveness check of the server, in ms: after a period in which nothing arrived
   * from it, the session sends a `ping` (a healthy server answers at once). @default 1000
   */
  livenessCheckMs?: number;
  /**
   * A server from which nothing (not even a `pong`) arrived for this long, in ms, is left for
   * the next server of the cluster: a frozen or cut-off server keeps the socket open but answers
   * nothing. Also the longest wait for a socket to open. @default 4000
   */
  silentServerMs?: number;
}

/** Handlers for what the server pushes; each may be replaced at any time. */
export interface SessionEvents {
  /** Connection status changed. */
  onStatus?(status: ConnectionStatus): void;
  /** A contact came online or went offline. */
  onPresence?(username: string, online: boolean): void;
  /** A WebRTC signal from another user. */
  onSignal?(from: string, data: SignalData): void;
  /** An opaque payload relayed by the servers from another user. */
  onRelay?(from: string, payload: string): void;
  /**
   * The stored session was re-established on a (re)connect — after a page reload or a failover,
   * possibly on another server.
   */
  onResumed?(info: SessionInfo): void;
  /** The token was refused on reconnect: the user must log in again. */
  onSessionLost?(reason: string): void;
  /**
   * The servers could not resume the session for now (`unavailable`: the copies of the account
   * are down): the session is kept, and retried on the next server after a backoff.
   */
  onResumeUnavailable?(message: string): void;
  /**
   * A newer login of this user elsewhere replaced this session: the token is forgotten and the
   * session will not reconnect until the next login. Without `handoverMs` the socket is closed.
   * With it, the server keeps the socket open that many ms (the hand-over grace, DESIGN §4), in
   * which only {@link SessionApi.signal} to one's own username works (it reaches the new
   * session); call `stop()` when done, or wait for {@link onHandoverClosed}.
   */
  onSuperseded?(message: string, handoverMs?: number): void;
  /** The socket kept open for a hand-over closed (the grace is over, or the server went away). */
  onHandoverClosed?(): void;
  /** An error not tied to a request (for example `peer_offline` for a signal or relay). */
  onServerError?(code: ErrorCode, message: string): void;
  /** `by` received messages `ids` of this user from their mailbox (and acknowledged them). */
  onDelivered?(by: string, ids: string[]): void;
  /** Mail was stored for this user during the session: the mailbox should be fetched. */
  onMailWaiting?(): void;
}

/** What a successful login or resume yields. */
export interface SessionInfo {
  username: string;
  /**
   * The token the session began with on this device: it names the session here (the unlocked
   * keys are kept under it) even after refreshes replaced it by {@link accessToken}.
   */
  token: string;
  /** When the newest access token expires. */
  expiresAt: number;
  servers: string[];
  /** The newest access token, once a refresh replaced {@link token}. */
  accessToken?: string;
  /** Traded for the next token pair before {@link expiresAt} (`refresh`). */
  refreshToken?: string;
  /**
   * At a password login only: the account's public keys and wrapped private keys, as the
   * `session` frame carried them. Never stored in the tab's storage; a resume does not carry
   * them (the device keeps its unlocked keys).
   */
  keys?: AccountKeys;
  /** The account's public keys (login, resume, refresh): the device checks its kept keys. */
  publicKeys?: PublicKeys;
  /** At a login: the previous session's device is offline, so its hand-over is deferred. */
  handover?: PreviousSession;
  /** At a login of a legacy account (salted with its name): it should be rekeyed now. */
  rekey?: true;
}

/** How long before its access token expires a session refreshes it, at most, in ms. */
const REFRESH_MARGIN_MS = 5 * 60_000;

/** A user's public keys from the directory (SPKI base64url). */
export interface DirectoryKeys {
  encryption: string;
  signing: string;
}

/** An error reply from the server; `message` is a sentence to show the user. */
export class ServerError extends Error {
  override name = "ServerError";
  /** Creates the error from the server's code and message. */
  constructor(readonly code: ErrorCode | "timeout" | "disconnected", message: string) {
    super(message);
  }
}

/** ICE servers for a session's links; TURN credentials in them expire at `expiresAt` (0: never). */
export interface IceGrant {
  iceServers: IceServer[];
  expiresAt: number;
}

/** The part of a session the chat model uses; {@link Session} implements it, tests fake it. */
export interface SessionApi {
  events: SessionEvents;
  readonly status: ConnectionStatus;
  /** The session restored from this tab's storage, if any. */
  storedSession(): SessionInfo | null;
  start(): void;
  /**
   * Creates an account: `secret` derived with the random `salt`; `keys` are its public keys and
   * wrapped private keys (every account has them).
   */
  register(username: string, secret: string, salt: string, keys: AccountKeys): Promise<void>;
  /** The salt to derive `username`'s login secret with (the servers answer for any name). */
  loginParams(username: string): Promise<string>;
  login(username: string, secret: string): Promise<SessionInfo>;
  /** Replaces the logged-in account's salt, secret and wrapped private keys at once. */
  rekey(salt: string, secret: string, wrapped: string): Promise<void>;
  resume(): Promise<SessionInfo>;
  /**
   * Replaces this connection's watch list with `usernames` (its presence notices come only for
   * them) and answers their online status now; a name without an account is just offline.
   */
  watch(usernames: readonly string[]): Promise<ContactEntry[]>;
  /** The ICE servers (STUN, TURN with time-limited credentials) for this session's links. */
  iceServers(): Promise<IceGrant>;
  ping(): Promise<number>;
  signal(to: string, data: SignalData): void;
  relay(to: string, payload: string): void;
  /** Stores messages in `to`'s mailbox; resolves once the servers hold them durably. */
  mailSend(to: string, messages: OutgoingMail[]): Promise<void>;
  /** This user's pending mailbox messages, in delivery order. */
  mailFetch(): Promise<IncomingMail[]>;
  /** Acknowledges received mailbox messages (they are deleted; their senders are told). */
  mailAck(messages: MailReceipt[]): Promise<void>;
  /** `username`'s public keys; rejects with `unknown_user` if the account has none. */
  getKeys(username: string): Promise<DirectoryKeys>;
  /** Ends the session on the server too (its token is refused from then on) and forgets it. */
  logout(): void;
  /** Closes the socket and stops reconnecting (the token stays). */
  stop(): void;
  /**
   * A deferred hand-over (DESIGN §4): claims the right to hand the history of superseded session
   * `token` over, signing the server's challenge with `sign` (the user's private key). Resolves
   * the grace in ms once admitted: the socket then serves only the hand-over, as after
   * `onSuperseded` with a grace. Rejects with {@link ServerError} (`peer_offline`: the new
   * session is not online now; `not_superseded`; `not_authenticated`…).
   */
  claimHandover(token: string, sign: (challenge: string) => Promise<string>): Promise<number>;
}

const TOKEN_KEY = "p2pchat.session";
const WS_OPEN = 1;

type Pending = {
  resolve: (frame: ServerFrame) => void;
  reject: (err: Error) => void;
  timer: TimerId;
};

/** Converts a server's http(s) base URL to its WebSocket endpoint. */
export function webSocketUrl(base: string): string {
  const url = new URL(base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.pathname = url.pathname.replace(/\/?$/, "/ws");
  url.search = "";
  url.hash = "";
  return url.toString();
}

/** The browser's WebSocket session with the cluster. */
export class Session implements SessionApi {
  /** Event handlers; assign fields to subscribe. */
  events: SessionEvents = {};
  #deps: SessionDeps;
  #timers: Timers;
  #opts: Required<SessionOptions>;
  #socket: SocketLike | null = null;
  #status: ConnectionStatus = "offline";
  #nextReqId = 1;
  #pending = new Map<number, Pending>();
  #waiters: Array<() => void> = [];
  #heartbeat: TimerId | null = null;
  /** The liveness check of the current socket (see `silentServerMs`). */
  #liveness: TimerId | null = null;
  /** Liveness checks in a row during which nothing arrived from the server. */
  #quietChecks = 0;
  #reconnectTimer: TimerId | null = null;
  #attempt = 0;
  /** Resumes in a row that a reachable server could not answer (each waits longer). */
  #resumeFailures = 0;
  #servers: string[];
  #serverIndex = 0;
  #active = false;
  /** Superseded, with the socket kept open for the history hand-over. */
  #handingOver = false;
  #session: SessionInfo | null;
  #refreshTimer: TimerId | null = null;

  /** Creates a session; call {@link start} to connect. */
  constructor(deps: SessionDeps, options: SessionOptions) {
    this.#deps = deps;
    this.#timers = deps.timers ?? {
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (id) => clearTimeout(id),
      setInterval: (fn, ms) => setInterval(fn, ms),
      clearInterval: (id) => clearInterval(id),
    };
    this.#opts = {
      requestTimeoutMs: 10_000,
      heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
      reconnectMinMs: 250,
      reconnectMaxMs: 5_000,
      livenessCheckMs: 1_000,
      silentServerMs: 4_000,
      ...options,
    };
    this.#session = this.#loadSession();
    // The home server first, then the rest of the cluster as last seen in this tab.
    this.#servers = unique([options.homeServer, ...(this.#session?.servers ?? [])]);
  }

  /** Current connection status. */
  get status(): ConnectionStatus {
    return this.#status;
  }

  /** The server the socket is (or is being) connected to. */
  get currentServer(): string {
    return this.#servers[this.#serverIndex] ?? this.#opts.homeServer;
  }

  /** The session saved in this tab, used to resume after a reload. */
  storedSession(): SessionInfo | null {
    return this.#session;
  }

  /** Starts connecting (idempotent). */
  start(): void {
    if (this.#active) return;
    this.#active = true;
    this.#connect();
  }

  /** Creates an account. Resolves on `ok`, rejects with {@link ServerError}. */
  async register(
    username: string,
    secret: string,
    salt: string,
    keys: AccountKeys,
  ): Promise<void> {
    await this.#request({
      v: PROTOCOL_VERSION,
      type: "register",
      reqId: 0,
      username,
      secret,
      salt,
      keys,
    });
  }

  /** See {@link SessionApi.loginParams}. Rejects with {@link ServerError}. */
  async loginParams(username: string): Promise<string> {
    const frame = await this.#request({
      v: PROTOCOL_VERSION,
      type: "login_params",
      reqId: 0,
      username,
    });
    if (frame.type !== "login_params" || frame.username !== username) {
      throw new ServerError("internal", "Unexpected reply");
    }
    return frame.salt;
  }

  /** See {@link SessionApi.rekey}. Rejects with {@link ServerError}. */
  async rekey(salt: string, secret: string, wrapped: string): Promise<void> {
    await this.#request({ v: PROTOCOL_VERSION, type: "rekey", reqId: 0, salt, secret, wrapped });
  }

  /** Logs in and stores the session token for this tab. */
  async login(username: string, secret: string): Promise<SessionInfo> {
    const frame = await this.#request({
      v: PROTOCOL_VERSION,
      type: "login",
      reqId: 0,
      username,
      secret,
    });
    return this.#adopt(frame);
  }

  /**
   * Resumes the stored session on the current server: with its access token, or with its
   * refresh token once the access token is about to expire (or was refused as expired).
   */
  async resume(): Promise<SessionInfo> {
    const session = this.#session;
    if (!session) {
      throw new ServerError("not_authenticated", "No session to resume: please log in");
    }
    const token = session.accessToken ?? session.token;
    if (session.refreshToken && session.expiresAt <= Date.now()) return this.#refresh();
    try {
      const frame = await this.#request({ v: PROTOCOL_VERSION, type: "resume", reqId: 0, token });
      return this.#adopt(frame);
    } catch (err) {
      if (err instanceof ServerError && err.code === "session_expired" && session.refreshToken) {
        return this.#refresh();
      }
      throw err;
    }
  }

  /** Trades the refresh token for a new pair (binding this socket to the session too). */
  async #refresh(): Promise<SessionInfo> {
    const refreshToken = this.#session?.refreshToken;
    if (!refreshToken) throw new ServerError("not_authenticated", "No session: please log in");
    const frame = await this.#request({
      v: PROTOCOL_VERSION,
      type: "refresh",
      reqId: 0,
      refreshToken,
    });
    return this.#adopt(frame, true);
  }

  /** Refreshes the tokens before the access token expires, while the session lasts. */
  #scheduleRefresh(): void {
    if (this.#refreshTimer !== null) this.#timers.clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    const session = this.#session;
    if (!session?.refreshToken) return;
    const left = session.expiresAt - Date.now();
    // At most 2^31 - 1 ms: a longer timer would fire at once.
    const delay = Math.min(
      2 ** 31 - 1,
      Math.max(100, Math.min(left - REFRESH_MARGIN_MS, left / 2)),
    );
    this.#refreshTimer = this.#timers.setTimeout(() => {
      this.#refreshTimer = null;
      if (this.#session !== session) return;
      if (this.#status !== "online") {
        // Offline now: the next resume refreshes if it must.
        return;
      }
      this.#refresh().then(() => {}, (err) => {
        if (this.#session !== session) return;
        if (
          err instanceof ServerError &&
          ["not_authenticated", "session_expired", "unknown_account"].includes(err.code)
        ) {
          this.#session = null;
          this.#deps.storage.removeItem(TOKEN_KEY);
          this.events.onSessionLost?.(err.message);
          return;
        }
        // Unavailable or cut off: tried again shortly (the access token is still valid).
        this.#refreshTimer = this.#timers.setTimeout(() => this.#scheduleRefresh(), 30_000);
      });
    }, delay);
  }

  /** Watches `usernames` (replacing the list) and answers their online status now. */
  async watch(usernames: readonly string[]): Promise<ContactEntry[]> {
    const frame = await this.#request({
      v: PROTOCOL_VERSION,
      type: "watch",
      reqId: 0,
      usernames: [...usernames],
    });
    if (frame.type !== "presence_list") throw new ServerError("internal", "Unexpected reply");
    return frame.users;
  }

  /** The ICE servers for this session's data channels, and when their credentials expire. */
  async iceServers(): Promise<IceGrant> {
    const frame = await this.#request({ v: PROTOCOL_VERSION, type: "ice_servers", reqId: 0 });
    if (frame.type !== "ice_servers") throw new ServerError("internal", "Unexpected reply");
    return { iceServers: frame.iceServers, expiresAt: frame.expiresAt };
  }

  /** Round trip to the home server, in ms. */
  async ping(): Promise<number> {
    const start = performance.now();
    await this.#request({ v: PROTOCOL_VERSION, type: "ping", reqId: 0 });
    return performance.now() - start;
  }

  /** Sends a WebRTC signal to `to` through the servers (fire and forget). */
  signal(to: string, data: SignalData): void {
    this.#sendNow({ v: PROTOCOL_VERSION, type: "signal", to, data });
  }

  /** Relays an opaque payload to `to` through the servers (fire and forget). */
  relay(to: string, payload: string): void {
    this.#sendNow({ v: PROTOCOL_VERSION, type: "relay", to, payload });
  }

  /** The directory's public keys of `username`. Rejects with {@link ServerError}. */
  async getKeys(username: string): Promise<DirectoryKeys> {
    const frame = await this.#request({
      v: PROTOCOL_VERSION,
      type: "get_keys",
      reqId: 0,
      username,
    });
    if (frame.type !== "keys" || frame.username !== username) {
      throw new ServerError("internal", "Unexpected reply");
    }
    return { encryption: frame.encryption, signing: frame.signing };
  }

  /** Stores `messages` (at most `MAX_MAIL_BATCH`) in `to`'s mailbox. Rejects with {@link ServerError}. */
  async mailSend(to: string, messages: OutgoingMail[]): Promise<void> {
    await this.#request({ v: PROTOCOL_VERSION, type: "mail_send", reqId: 0, to, messages });
  }

  /**
   * Fetches this user's pending mailbox messages, in delivery order, page after page (a page is
   * bounded in bytes, so a flooded mailbox never exceeds what one frame may carry).
   */
  async mailFetch(): Promise<IncomingMail[]> {
    const all: IncomingMail[] = [];
    // Bounded: a mailbox holds at most its quota, and every page brings at least one message.
    for (let page = 0; page < 100_000; page++) {
      const after = all.at(-1)?.id;
      const frame = await this.#request({
        v: PROTOCOL_VERSION,
        type: "mail_fetch",
        reqId: 0,
        ...(after === undefined ? {} : { after }),
      });
      if (frame.type !== "mail") throw new ServerError("internal", "Unexpected reply");
      all.push(...frame.messages);
      if (!frame.more || frame.messages.length === 0) break;
    }
    return all;
  }

  /** Acknowledges received mailbox messages (at most `MAX_MAIL_BATCH`). */
  async mailAck(messages: MailReceipt[]): Promise<void> {
    await this.#request({ v: PROTOCOL_VERSION, type: "mail_ack", reqId: 0, messages });
  }

  /** See {@link SessionApi.claimHandover}. */
  async claimHandover(
    token: string,
    sign: (challenge: string) => Promise<string>,
  ): Promise<number> {
    if (this.#session) {
      throw new ServerError("not_authenticated", "This tab has a session: it cannot hand over");
    }
    const asked = await this.#request({
      v: PROTOCOL_VERSION,
      type: "handover_challenge",
      reqId: 0,
    });
    if (asked.type !== "handover_challenge") throw new ServerError("internal", "Unexpected reply");
    const signature = await sign(asked.challenge);
    const frame = await this.#request({
      v: PROTOCOL_VERSION,
      type: "handover_claim",
      reqId: 0,
      claim: 1,
      token,
      challenge: asked.challenge,
      signature,
    });
    if (frame.type !== "handover_admitted") throw new ServerError("internal", "Unexpected reply");
    // From now on this socket serves the hand-over only, like a superseded one in its grace.
    this.#handingOver = true;
    this.#active = false;
    if (this.#reconnectTimer !== null) this.#timers.clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#setStatus("offline");
    return frame.handoverMs;
  }

  /** Forgets the token and closes the connection; a new {@link start} reconnects anonymously. */
  logout(): void {
    // Tells the server first (best effort, unanswered: the socket closes right after, and a
    // browser sends what it queued before its close frame), so the token dies with the session
    // and the next login hears that this device signed out rather than that it owes a hand-over.
    if (this.#session) {
      this.#sendNow({ v: PROTOCOL_VERSION, type: "logout", reqId: this.#nextReqId++ });
    }
    this.#session = null;
    this.#deps.storage.removeItem(TOKEN_KEY);
    this.stop();
  }

  /** Closes the socket and stops reconnecting. */
  stop(): void {
    this.#active = false;
    this.#handingOver = false;
    // The next resume refreshes if the access token ran out meanwhile.
    if (this.#refreshTimer !== null) this.#timers.clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    if (this.#reconnectTimer !== null) this.#timers.clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    const socket = this.#socket;
    this.#socket = null;
    this.#onSocketGone();
    socket?.close(1000, "logout");
    this.#setStatus("offline");
  }

  #loadSession(): SessionInfo | null {
    const text = this.#deps.storage.getItem(TOKEN_KEY);
    if (!text) return null;
    try {
      const s = JSON.parse(text) as SessionInfo;
      if (typeof s.token === "string" && typeof s.username === "string") return s;
    } catch {
      // A corrupt entry is treated as no session.
    }
    return null;
  }

  /** Takes the session a `session` frame grants; `refreshed`: it answers this tab's `refresh`. */
  #adopt(frame: ServerFrame, refreshed = false): SessionInfo {
    if (frame.type !== "session") throw new ServerError("internal", "Unexpected reply");
    const before = this.#session;
    // The same session going on (a resume or a refresh): it keeps the token it began with here.
    const continued = before !== null && before.username === frame.username &&
      (refreshed || frame.token === (before.accessToken ?? before.token));
    const token = continued ? before.token : frame.token;
    const refreshToken = frame.refreshToken ?? (continued ? before.refreshToken : undefined);
    const info: SessionInfo = {
      username: frame.username,
      token,
      expiresAt: frame.expiresAt,
      servers: frame.servers,
      ...(frame.token !== token ? { accessToken: frame.token } : {}),
      ...(refreshToken ? { refreshToken } : {}),
    };
    this.#session = info;
    this.#resumeFailures = 0;
    this.#scheduleRefresh();
    this.#deps.storage.setItem(TOKEN_KEY, JSON.stringify(info));
    const current = this.currentServer;
    this.#servers = unique([current, ...frame.servers, ...this.#servers]);
    this.#serverIndex = 0;
    this.#setStatus("online");
    return {
      ...info,
      ...(frame.keys ? { keys: frame.keys } : {}),
      ...(frame.publicKeys ? { publicKeys: frame.publicKeys } : {}),
      ...(frame.handover ? { handover: frame.handover } : {}),
      ...(frame.rekey ? { rekey: true as const } : {}),
    };
  }

  #setStatus(status: ConnectionStatus): void {
    if (this.#status === status) return;
    this.#status = status;
    this.events.onStatus?.(status);
  }

  #connect(): void {
    if (!this.#active) return;
    this.#setStatus("connecting");
    let socket: SocketLike;
    try {
      socket = this.#deps.openSocket(webSocketUrl(this.currentServer));
    } catch {
      this.#scheduleReconnect();
      return;
    }
    this.#socket = socket;
    this.#watchLiveness(socket);
    socket.onopen = () => {
      if (this.#socket !== socket) return;
      this.#quietChecks = 0;
      this.#attempt = 0;
      this.#setStatus("connected");
      this.#heartbeat = this.#timers.setInterval(
        () => this.#sendNow({ v: PROTOCOL_VERSION, type: "heartbeat" }),
        this.#opts.heartbeatIntervalMs,
      );
      for (const w of this.#waiters.splice(0)) w();
      if (this.#session) void this.#resumeAfterReconnect();
    };
    socket.onmessage = (ev) => {
      if (this.#socket !== socket) return;
      this.#quietChecks = 0;
      this.#onFrame(ev.data);
    };
    socket.onerror = () => {
      // onclose follows; nothing to do here.
    };
    socket.onclose = (ev) => {
      if (this.#socket !== socket) return;
      if (this.#handingOver) {
        this.#handingOver = false;
        this.#socket = null;
        this.#onSocketGone();
        this.events.onHandoverClosed?.();
        return;
      }
      if (ev?.code === SUPERSEDED_CLOSE_CODE) {
        // The `superseded` frame was lost, but the close code says the same.
        this.#superseded("Signed in elsewhere");
        return;
      }
      this.#socket = null;
      this.#onSocketGone();
      this.#scheduleReconnect();
    };
  }

  async #resumeAfterReconnect(): Promise<void> {
    try {
      const info = await this.resume();
      this.events.onResumed?.(info);
    } catch (err) {
      if (
        err instanceof ServerError &&
        ["session_expired", "not_authenticated", "wrong_credentials", "unknown_account"]
          .includes(err.code)
      ) {
        this.#session = null;
        this.#deps.storage.removeItem(TOKEN_KEY);
        this.events.onSessionLost?.(err.message);
      } else {
        // The server is reachable but could not resume (e.g. unavailable): try another one,
        // after a backoff (the connection opened, so the reconnect delay alone would be none).
        this.#resumeFailures++;
        if (err instanceof ServerError && err.code === "unavailable") {
          this.events.onResumeUnavailable?.(err.message);
        }
        this.#socket?.close(4000, "resume failed");
      }
    }
  }

  /**
   * Leaves `socket`'s server once nothing arrived from it for `silentServerMs` (counted in
   * liveness checks), pinging it after every quiet check while open; a socket that does not open
   * in that time is given up too. Its close event is not awaited: a frozen server never sends one.
   */
  #watchLiveness(socket: SocketLike): void {
    if (this.#liveness !== null) this.#timers.clearInterval(this.#liveness);
    this.#quietChecks = 0;
    const checksAllowed = Math.max(
      1,
      Math.ceil(this.#opts.silentServerMs / this.#opts.livenessCheckMs),
    );
    this.#liveness = this.#timers.setInterval(() => {
      if (this.#socket !== socket || this.#handingOver) return;
      this.#quietChecks++;
      if (this.#quietChecks >= checksAllowed) {
        this.#socket = null;
        this.#onSocketGone();
        socket.close(4002, "server silent");
        this.#scheduleReconnect();
        return;
      }
      // Unmatched reqId: the `pong` only counts as a sign of life.
      this.#sendNow({ v: PROTOCOL_VERSION, type: "ping", reqId: this.#nextReqId++ });
    }, this.#opts.livenessCheckMs);
  }

  #onSocketGone(): void {
    if (this.#heartbeat !== null) this.#timers.clearInterval(this.#heartbeat);
    this.#heartbeat = null;
    if (this.#liveness !== null) this.#timers.clearInterval(this.#liveness);
    this.#liveness = null;
    for (const [id, p] of this.#pending) {
      this.#timers.clearTimeout(p.timer);
      p.reject(new ServerError("disconnected", "Connection to the server was lost"));
      this.#pending.delete(id);
    }
  }

  #scheduleReconnect(): void {
    if (!this.#active) return;
    this.#setStatus("connecting");
    // Fail over: the next attempt goes to the next known server.
    this.#serverIndex = (this.#serverIndex + 1) % Math.max(1, this.#servers.length);
    const delay = Math.min(
      this.#opts.reconnectMaxMs,
      this.#opts.reconnectMinMs *
        2 ** Math.floor(this.#attempt / Math.max(1, this.#servers.length)),
    );
    this.#attempt++;
    const afterRefusedResume = this.#resumeFailures === 0 ? 0 : Math.min(
      this.#opts.reconnectMaxMs,
      this.#opts.reconnectMinMs * 2 ** (this.#resumeFailures - 1),
    );
    this.#reconnectTimer = this.#timers.setTimeout(() => {
      this.#reconnectTimer = null;
      this.#connect();
    }, Math.max(this.#attempt <= 1 ? 0 : delay, afterRefusedResume));
  }

  #onFrame(data: unknown): void {
    let frame: ServerFrame;
    try {
      frame = parseServerFrame(data);
    } catch (err) {
      console.warn("Ignoring malformed frame from server:", err);
      return;
    }
    switch (frame.type) {
      case "ok":
      case "session":
      case "login_params":
      case "presence_list":
      case "pong":
      case "mail":
      case "keys":
      case "handover_challenge":
      case "handover_admitted":
      case "ice_servers":
        this.#settle(frame.reqId, frame);
        return;
      case "delivered":
        this.events.onDelivered?.(frame.by, frame.ids);
        return;
      case "mail_waiting":
        this.events.onMailWaiting?.();
        return;
      case "error":
        if (frame.reqId !== undefined && this.#pending.has(frame.reqId)) {
          this.#settle(frame.reqId, frame);
        } else {
          this.events.onServerError?.(frame.code, frame.message);
        }
        return;
      case "presence":
        this.events.onPresence?.(frame.username, frame.online);
        return;
      case "signal":
        this.events.onSignal?.(frame.from, frame.data);
        return;
      case "relay":
        this.events.onRelay?.(frame.from, frame.payload);
        return;
      case "superseded":
        this.#superseded(frame.message, frame.handoverMs);
        return;
      case "session_started":
      case "handover_signal":
        return; // between servers only
    }
  }

  /**
   * Ends this session for good: a newer login of the same user replaced it. With a hand-over
   * grace the socket stays open (no reconnect, no requests) for the hand-over's signals.
   */
  #superseded(message: string, handoverMs?: number): void {
    this.#session = null;
    this.#deps.storage.removeItem(TOKEN_KEY);
    if (handoverMs && handoverMs > 0 && this.#socket?.readyState === WS_OPEN) {
      this.#handingOver = true;
      this.#active = false;
      if (this.#reconnectTimer !== null) this.#timers.clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = null;
      this.#setStatus("offline");
      this.events.onSuperseded?.(message, handoverMs);
      return;
    }
    this.stop();
    this.events.onSuperseded?.(message);
  }

  #settle(reqId: number, frame: ServerFrame): void {
    const p = this.#pending.get(reqId);
    if (!p) return;
    this.#pending.delete(reqId);
    this.#timers.clearTimeout(p.timer);
    if (frame.type === "error") p.reject(new ServerError(frame.code, frame.message));
    else p.resolve(frame);
  }

  #whenOpen(timeoutMs: number): Promise<void> {
    if (this.#socket?.readyState === WS_OPEN) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = this.#timers.setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== done);
        reject(new ServerError("disconnected", "Cannot reach any server: try again later"));
      }, timeoutMs);
      const done = () => {
        this.#timers.clearTimeout(timer);
        resolve();
      };
      this.#waiters.push(done);
    });
  }

  async #request(frame: ClientFrame & { reqId: number }): Promise<ServerFrame> {
    this.start();
    await this.#whenOpen(this.#opts.requestTimeoutMs);
    const reqId = this.#nextReqId++;
    const out = { ...frame, reqId };
    return new Promise((resolve, reject) => {
      const timer = this.#timers.setTimeout(() => {
        this.#pending.delete(reqId);
        reject(new ServerError("timeout", `The server did not answer "${frame.type}" in time`));
      }, this.#opts.requestTimeoutMs);
      this.#pending.set(reqId, { resolve, reject, timer });
      if (!this.#sendNow(out)) {
        this.#pending.delete(reqId);
        this.#timers.clearTimeout(timer);
        reject(new ServerError("disconnected", "Not connected to a server"));
      }
    });
  }

  #sendNow(frame: ClientFrame): boolean {
    const socket = this.#socket;
    if (!socket || socket.readyState !== WS_OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }
}

function unique(items: string[]): string[] {
  return [...new Set(items.map((s) => s.replace(/\/+$/, "")))];
}
