/**
 * The browser edge: one WebSocket per tab. Each frame is charged to the connection's rate limit,
 * validated by the shared parser (a bad frame gets a typed error and is counted), then mapped to
 * a call on a `server/users` service; a {@link UserError} becomes an `error` frame with its code.
 * It keeps no session, presence or storage logic of its own.
 */
import {
  ABUSE_CLOSE_CODE,
  type ClientFrame,
  type ErrorCode,
  errorFrame,
  parseClientFrame,
  ProtocolError,
  reservedSignalKey,
  type ServerFrame,
} from "../../shared/mod.ts";
import type { Clock } from "../../shared/clock.ts";
import { UnavailableError } from "../replication/mod.ts";
import type { Log, Metrics } from "../telemetry/mod.ts";
import {
  type AbuseLimits,
  type Accounts,
  addressKey,
  type ClientConnection,
  DEFAULT_LIMITS,
  HANDOVER_ONLY_MESSAGE,
  type IceServers,
  KeyLookupLimiter,
  type KeyLookupRules,
  type LocalSessions,
  type Mailboxes,
  type Presence,
  type Routing,
  type SessionGrant,
  type Sessions,
  TokenBucket,
  UNAVAILABLE_MESSAGE,
  UserError,
} from "../users/mod.ts";

/** Collaborators of a {@link ClientHub}. */
export interface ClientHubDeps {
  accounts: Accounts;
  sessions: Sessions;
  /** This server's connections: their watch lists (who hears whose presence). */
  local: LocalSessions;
  presence: Presence;
  routing: Routing;
  mailboxes: Mailboxes;
  metrics: Metrics;
  log: Log;
  clock: Clock;
  /** The STUN/TURN servers sessions get; none when absent. */
  ice?: IceServers;
}

/** Configuration of a {@link ClientHub}. */
export interface ClientHubOptions {
  /** Most open browser connections on this server. @default 10000 */
  maxConnections?: number;
  /** Most open browser connections from one address (IPv6: one /64). @default 200 */
  maxConnectionsPerAddress?: number;
  /** Per-connection frame limits; missing fields take {@link DEFAULT_LIMITS}. */
  limits?: Partial<Pick<AbuseLimits, "framesPerConnection" | "droppedFramesBeforeClose">>;
  /** Key lookups (`get_keys`) per user; missing fields take `DEFAULT_KEY_LOOKUPS`. */
  keyLookups?: Partial<KeyLookupRules>;
}

/**
 * One browser WebSocket as the hub needs it: text out, messages in, close. The server's own
 * WebSocket (`ws_socket.ts`, capped before buffering) implements it; the hub keeps no framing.
 */
export interface ClientSocket {
  /** Whether {@link send} still reaches the client. */
  readonly isOpen: boolean;
  send(text: string): void;
  close(code: number, reason: string): void;
  /** Each whole message: a string for text, bytes for binary. */
  onmessage: ((event: { data: string | Uint8Array }) => void) | null;
  /** Once, when the connection has ended (however it ended). */
  onclose: (() => void) | null;
}

/** One browser WebSocket, as the users services see it. */
class SocketConnection implements ClientConnection {
  lastSeen: number;
  /** When the last `rate_limited` error was sent (at most one per second). */
  lastLimitedAt = -Infinity;

  constructor(
    readonly socket: ClientSocket,
    readonly address: string,
    readonly frames: TokenBucket,
    readonly strikes: TokenBucket,
    now: number,
  ) {
    this.lastSeen = now;
  }

  send(frame: ServerFrame): boolean {
    if (!this.socket.isOpen) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  close(code: number, reason: string): void {
    try {
      this.socket.close(code, reason);
    } catch { /* already closing */ }
  }
}

/** Accepts browser WebSockets and maps their frames to the users services. */
export class ClientHub {
  #deps: ClientHubDeps;
  #limits: Pick<AbuseLimits, "framesPerConnection" | "droppedFramesBeforeClose">;
  #maxConnections: number;
  #maxPerAddress: number;
  #open = 0;
  #openByAddress = new Map<string, number>();
  #keyLookups: KeyLookupLimiter;

  /** Creates the hub. */
  constructor(deps: ClientHubDeps, options: ClientHubOptions = {}) {
    this.#deps = deps;
    this.#limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.#maxConnections = options.maxConnections ?? 10_000;
    this.#maxPerAddress = options.maxConnectionsPerAddress ?? 200;
    this.#keyLookups = new KeyLookupLimiter(options.keyLookups, () => deps.clock.now());
    deps.metrics.describe(
      "p2pchat_ws_refused_total",
      "counter",
      "WebSocket upgrades refused, by reason (origin, connection limits)",
    );
    deps.metrics.describe(
      "p2pchat_invalid_frames_total",
      "counter",
      "Frames rejected by validation",
    );
  }

  /**
   * Why a new connection from `address` must be refused now (a sentence for the client), or
   * undefined when it may connect: the server's and the address's connection limits.
   */
  refusal(address = "unknown"): string | undefined {
    if (this.#open >= this.#maxConnections) {
      this.#deps.metrics.inc("p2pchat_ws_refused_total", { reason: "server_full" });
      return `This server has ${this.#maxConnections} connections, its limit: try another server`;
    }
    if ((this.#openByAddress.get(addressKey(address)) ?? 0) >= this.#maxPerAddress) {
      this.#deps.metrics.inc("p2pchat_ws_refused_total", { reason: "address_full" });
      return `Too many connections from your address (at most ${this.#maxPerAddress}): close some`;
    }
    return undefined;
  }

  /** Takes over an upgraded WebSocket from the client at `address` (its IP). */
  accept(socket: ClientSocket, address = "unknown"): void {
    const key = addressKey(address);
    this.#open++;
    this.#openByAddress.set(key, (this.#openByAddress.get(key) ?? 0) + 1);
    let counted = true;
    const release = () => {
      if (!counted) return;
      counted = false;
      this.#open--;
      const left = (this.#openByAddress.get(key) ?? 1) - 1;
      if (left > 0) this.#openByAddress.set(key, left);
      else this.#openByAddress.delete(key);
    };
    const now = () => this.#deps.clock.now();
    const conn = new SocketConnection(
      socket,
      address,
      new TokenBucket(this.#limits.framesPerConnection, now),
      new TokenBucket(this.#limits.droppedFramesBeforeClose, now),
      now(),
    );
    this.#deps.sessions.connect(conn);
    socket.onmessage = (event) => {
      conn.lastSeen = now();
      if (!this.#admitFrame(conn)) return;
      this.#onFrame(conn, event.data).catch((err) => {
        const reqId = reqIdOf(event.data);
        if (err instanceof UserError) return this.#fail(conn, err.code, err.message, reqId);
        // The ring could not answer (repairing, or too few servers): nothing was changed.
        if (err instanceof UnavailableError) {
          return this.#fail(conn, "unavailable", UNAVAILABLE_MESSAGE, reqId);
        }
        this.#deps.log("frame_handler_failed", { error: String(err) });
        this.#fail(conn, "internal", "Internal error", reqId);
      });
    };
    socket.onclose = () => {
      release();
      this.#deps.sessions.disconnect(conn);
    };
  }

  #fail(conn: SocketConnection, code: ErrorCode, message: string, reqId?: number): void {
    const frame: ServerFrame = { v: 1, type: "error", code, message };
    if (reqId !== undefined) frame.reqId = reqId;
    conn.send(frame);
  }

  /** Charges one frame to the connection; false (and maybe closes it) when over the limit. */
  #admitFrame(conn: SocketConnection): boolean {
    const { metrics, log, clock, sessions } = this.#deps;
    if (conn.frames.take()) return true;
    metrics.inc("p2pchat_rate_limited_total", { kind: "frame" });
    if (!conn.strikes.take()) {
      log("connection_closed_for_abuse", {
        username: sessions.userOf(conn),
        address: conn.address,
      });
      conn.close(ABUSE_CLOSE_CODE, "too many frames");
      sessions.disconnect(conn);
      return false;
    }
    const now = clock.now();
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

  async #onFrame(conn: SocketConnection, data: unknown): Promise<void> {
    const { sessions, accounts, mailboxes, presence, routing, metrics } = this.#deps;
    let frame: ClientFrame;
    try {
      frame = parseClientFrame(data);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      metrics.inc("p2pchat_invalid_frames_total", { source: "client" });
      conn.send(errorFrame(err, reqIdOf(data)));
      return;
    }
    switch (frame.type) {
      case "heartbeat":
        return;
      case "ping":
        conn.send({ v: 1, type: "pong", reqId: frame.reqId });
        return;
    }
    const graceUser = sessions.graceUserOf(conn);
    if (graceUser !== undefined) {
      // In its hand-over grace a connection may only signal the user's new session.
      if (frame.type !== "signal" || frame.to !== graceUser) {
        throw new UserError("not_authenticated", HANDOVER_ONLY_MESSAGE);
      }
      this.#refuseReserved(frame.data);
      return await sessions.signalOwnDevice(conn, frame.data);
    }
    switch (frame.type) {
      case "register":
        await accounts.register(frame, conn.address);
        conn.send({ v: 1, type: "ok", reqId: frame.reqId });
        return;
      case "login":
        return this.#session(
          conn,
          frame.reqId,
          await sessions.login(conn, frame.username, frame.secret),
        );
      case "login_params": {
        const { salt } = await accounts.loginParams(frame.username);
        const username = frame.username;
        conn.send({ v: 1, type: "login_params", reqId: frame.reqId, username, salt });
        return;
      }
      case "resume":
        return this.#session(conn, frame.reqId, await sessions.resume(conn, frame.token));
      case "refresh":
        return this.#session(conn, frame.reqId, await sessions.refresh(conn, frame.refreshToken));
      case "rekey":
        await sessions.rekey(conn, frame);
        conn.send({ v: 1, type: "ok", reqId: frame.reqId });
        return;
      // A deferred hand-over: an offline device, replaced meanwhile, comes back to hand over.
      case "handover_challenge": {
        const challenge = sessions.handoverChallenge(conn);
        conn.send({ v: 1, type: "handover_challenge", reqId: frame.reqId, challenge });
        return;
      }
      case "handover_claim": {
        const handoverMs = await sessions.claimHandover(conn, frame);
        conn.send({ v: 1, type: "handover_admitted", reqId: frame.reqId, handoverMs });
        return;
      }
      case "logout":
        await sessions.logout(conn);
        conn.send({ v: 1, type: "ok", reqId: frame.reqId });
        return;
    }
    const me = sessions.userOf(conn);
    if (!me) throw new UserError("not_authenticated", "Log in first");
    switch (frame.type) {
      case "ice_servers": {
        const grant = this.#deps.ice
          ? await this.#deps.ice.forUser(me)
          : { iceServers: [], expiresAt: 0 };
        conn.send({ v: 1, type: "ice_servers", reqId: frame.reqId, ...grant });
        return;
      }
      case "watch": {
        this.#deps.local.watch(conn, frame.usernames);
        conn.send({
          v: 1,
          type: "presence_list",
          reqId: frame.reqId,
          // A name without an account is simply offline: the answer tells nothing of accounts.
          users: frame.usernames.map((username) => ({
            username,
            online: username !== me && presence.isOnline(username),
          })),
        });
        return;
      }
      case "get_keys": {
        this.#chargeLookup(me);
        const keys = (await accounts.get(frame.username))?.keys;
        if (!keys) {
          this.#keyLookups.miss(me);
          throw new UserError(
            "unknown_user",
            `No public keys for "${frame.username}": the user does not exist or registered without keys`,
          );
        }
        conn.send({
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
        await mailboxes.send(me, frame.to, frame.messages);
        conn.send({ v: 1, type: "ok", reqId: frame.reqId });
        return;
      case "mail_fetch": {
        const page = await mailboxes.fetch(me, frame.after);
        conn.send({
          v: 1,
          type: "mail",
          reqId: frame.reqId,
          messages: page.messages,
          ...(page.more ? { more: true } : {}),
        });
        return;
      }
      case "mail_ack":
        await mailboxes.acknowledge(me, frame.messages);
        conn.send({ v: 1, type: "ok", reqId: frame.reqId });
        return;
      case "signal":
      case "relay": {
        if (frame.type === "signal") {
          this.#refuseReserved(frame.data);
          // To oneself: for the connections this session superseded, in their hand-over grace.
          if (frame.to === me) return await sessions.signalOwnDevice(conn, frame.data);
        }
        const out: ServerFrame = frame.type === "signal"
          ? { v: 1, type: "signal", from: me, data: frame.data }
          : { v: 1, type: "relay", from: me, payload: frame.payload };
        const delivered = await routing.deliver(frame.to, out);
        metrics.inc("p2pchat_relayed_total", {
          kind: frame.type,
          result: delivered ? "delivered" : "offline",
        });
        if (!delivered) this.#fail(conn, "peer_offline", `${frame.to} is offline`);
        return;
      }
    }
  }

  /** Charges one `get_keys` lookup to `me`, or refuses it with `rate_limited` and the wait. */
  #chargeLookup(me: string): void {
    const waitMs = this.#keyLookups.admit(me);
    if (waitMs === 0) return;
    this.#deps.metrics.inc("p2pchat_rate_limited_total", { kind: "get_keys" });
    const seconds = Math.max(1, Math.ceil(waitMs / 1000));
    throw new UserError("rate_limited", `Too many contact lookups: retry after ${seconds} s`);
  }

  #session(conn: SocketConnection, reqId: number, grant: SessionGrant): void {
    conn.send({ v: 1, type: "session", reqId, ...grant });
  }

  /** Refuses signal data carrying a key reserved for the servers. */
  #refuseReserved(data: Record<string, unknown>): void {
    const key = reservedSignalKey(data);
    if (key === undefined) return;
    this.#deps.metrics.inc("p2pchat_invalid_frames_total", { source: "client" });
    throw new UserError("bad_frame", `Signal data must not carry "${key}": that key is reserved`);
  }
}

/** Best-effort reqId of a frame, so the client can match the error. */
function reqIdOf(data: unknown): number | undefined {
  if (typeof data !== "string" || data.length > 65536) return undefined;
  try {
    const id = (JSON.parse(data) as { reqId?: unknown })?.reqId;
    return typeof id === "number" && Number.isSafeInteger(id) && id >= 0 ? id : undefined;
  } catch {
    return undefined;
  }
}
