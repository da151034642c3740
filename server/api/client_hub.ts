/**
 * The server's side of browser sessions: one WebSocket per tab, each frame validated before it
 * touches state, bad frames answered with a typed error and counted. It maps frames to calls on
 * the cluster (register, deliver, presence) and holds no placement logic of its own.
 */
import { compare, hash } from "bcryptjs";
import {
  type ClientFrame,
  type ErrorCode,
  errorFrame,
  parseClientFrame,
  PRESENCE_TIMEOUT_MS,
  ProtocolError,
  type ServerFrame,
} from "../../shared/mod.ts";
import type { NodeStore } from "../store/mod.ts";
import type { Metrics } from "./metrics.ts";
import { type Cluster, type LocalSessions, type Log, UnavailableError } from "../cluster/mod.ts";
import { TokenError, type Tokens } from "./tokens.ts";

/** Collaborators of a {@link ClientHub}. */
export interface ClientHubDeps {
  store: NodeStore;
  metrics: Metrics;
  tokens: Tokens;
  log: Log;
}

/** Configuration of a {@link ClientHub}. */
export interface ClientHubOptions {
  /** bcrypt cost factor for stored secrets. @default 10 */
  bcryptCost?: number;
  /** A session silent this long is closed, in ms. @default PRESENCE_TIMEOUT_MS */
  presenceTimeoutMs?: number;
}

interface Connection {
  socket: WebSocket;
  username: string | undefined;
  lastSeen: number;
}

/** All browser sessions on this server; implements the cluster's view of local sessions. */
export class ClientHub implements LocalSessions {
  #deps: ClientHubDeps;
  #cluster: Cluster | undefined;
  #bcryptCost: number;
  #presenceTimeoutMs: number;
  #connections = new Set<Connection>();
  #byUser = new Map<string, Connection>();
  #sweeper: ReturnType<typeof setInterval> | undefined;

  /** Creates the hub; {@link bind} it to the cluster before accepting sockets. */
  constructor(deps: ClientHubDeps, options: ClientHubOptions = {}) {
    this.#deps = deps;
    this.#bcryptCost = options.bcryptCost ?? 10;
    this.#presenceTimeoutMs = options.presenceTimeoutMs ?? PRESENCE_TIMEOUT_MS;
    const m = deps.metrics;
    m.describe("p2pchat_ws_connections", "gauge", "Open browser WebSockets");
    m.describe("p2pchat_sessions", "gauge", "Logged-in users on this server");
    m.describe("p2pchat_invalid_frames_total", "counter", "Frames rejected by validation");
    m.describe("p2pchat_relayed_total", "counter", "Frames relayed between users, by kind");
    m.describe("p2pchat_logins_total", "counter", "Login attempts, by result");
    m.describe("p2pchat_registrations_total", "counter", "Registrations, by result");
  }

  /** Connects the hub to the cluster that routes frames between servers. */
  bind(cluster: Cluster): void {
    this.#cluster = cluster;
    this.#sweeper = setInterval(() => this.#sweep(), Math.min(5000, this.#presenceTimeoutMs / 3));
  }

  /** Closes every socket and stops the presence sweeper. */
  close(): void {
    clearInterval(this.#sweeper);
    for (const c of this.#connections) c.socket.close(1001, "server shutting down");
  }

  /** Takes over an upgraded WebSocket. */
  accept(socket: WebSocket): void {
    const conn: Connection = { socket, username: undefined, lastSeen: Date.now() };
    this.#connections.add(conn);
    this.#gauge();
    socket.onmessage = (event) => {
      conn.lastSeen = Date.now();
      this.#onFrame(conn, event.data).catch((err) => {
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

  deliverLocal(username: string, frame: ServerFrame): boolean {
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
          if (!this.#deps.store.getAccount(claims.username)) {
            return this.#fail(
              conn,
              "not_authenticated",
              "Unknown account: please log in again",
              frame.reqId,
            );
          }
          this.#bindUser(conn, claims.username);
          this.#send(conn, {
            v: 1,
            type: "session",
            reqId: frame.reqId,
            username: claims.username,
            token: frame.token,
            expiresAt: claims.expiresAt,
            servers: cluster.liveServers(),
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
    switch (frame.type) {
      case "contacts":
        this.#send(conn, {
          v: 1,
          type: "contacts",
          reqId: frame.reqId,
          users: this.#deps.store.listAccounts().filter((a) => a.username !== me).map((a) => ({
            username: a.username,
            online: cluster.isOnline(a.username),
          })),
        });
        return;
      case "signal":
      case "relay": {
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
    if (this.#deps.store.getAccount(frame.username)) {
      metrics.inc("p2pchat_registrations_total", { result: "taken" });
      return this.#fail(
        conn,
        "username_taken",
        `Username "${frame.username}" is taken: choose another`,
        frame.reqId,
      );
    }
    const account = {
      username: frame.username,
      hash: await hash(frame.secret, this.#bcryptCost),
      createdAt: Date.now(),
    };
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

  async #login(conn: Connection, frame: Extract<ClientFrame, { type: "login" }>) {
    const account = this.#deps.store.getAccount(frame.username);
    const ok = account !== undefined && await compare(frame.secret, account.hash);
    this.#deps.metrics.inc("p2pchat_logins_total", { result: ok ? "ok" : "rejected" });
    if (!ok) {
      return this.#fail(
        conn,
        "wrong_credentials",
        "Unknown username or wrong password",
        frame.reqId,
      );
    }
    const { token, claims } = await this.#deps.tokens.issue(frame.username);
    this.#bindUser(conn, frame.username);
    this.#send(conn, {
      v: 1,
      type: "session",
      reqId: frame.reqId,
      username: frame.username,
      token,
      expiresAt: claims.expiresAt,
      servers: this.#cluster!.liveServers(),
    });
  }

  #bindUser(conn: Connection, username: string): void {
    if (conn.username && conn.username !== username) this.#unbind(conn);
    const wasOnline = this.#cluster!.isOnline(username);
    conn.username = username;
    this.#byUser.set(username, conn);
    this.#gauge();
    if (!wasOnline) this.presenceChanged(username, true);
    this.#cluster!.helloNow();
  }

  #unbind(conn: Connection): void {
    const username = conn.username;
    if (!username || this.#byUser.get(username) !== conn) return;
    this.#byUser.delete(username);
    conn.username = undefined;
    if (!this.#cluster!.isOnline(username)) this.presenceChanged(username, false);
    this.#cluster!.helloNow();
  }

  #drop(conn: Connection): void {
    if (!this.#connections.delete(conn)) return;
    this.#unbind(conn);
    this.#gauge();
  }

  #sweep(): void {
    const cutoff = Date.now() - this.#presenceTimeoutMs;
    for (const conn of this.#connections) {
      if (conn.lastSeen < cutoff) {
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
