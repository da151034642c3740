/**
 * The browser connections of this server and the user sessions bound to them: which connection
 * is each user's session here, which connections are in their hand-over grace, and local
 * delivery of frames. It holds state and sends frames; the decisions (who supersedes whom, when
 * a grace ends) are {@link Sessions}'.
 */
import type { ServerFrame } from "../../shared/mod.ts";
import type { Metrics } from "../telemetry/mod.ts";
import type { ClientConnection } from "./ports.ts";
import { isNewer, type SessionStamp } from "./session_registry.ts";

/** A user's session bound to a connection. */
export interface BoundSession {
  username: string;
  session: SessionStamp;
}

/** A superseded connection in its hand-over grace. */
export interface Grace {
  username: string;
  /** The session that superseded this connection's: the only one it may signal. */
  current: SessionStamp;
}

/** This server's connections and the sessions bound to them. */
export class LocalSessions {
  #metrics: Metrics;
  #connections = new Set<ClientConnection>();
  #bound = new Map<ClientConnection, BoundSession>();
  /** Each user's connection here with the newest session: where frames for the user go. */
  #byUser = new Map<string, ClientConnection>();
  /** Every connection bound to each user (more than one only until the older is superseded). */
  #boundByUser = new Map<string, Set<ClientConnection>>();
  #graces = new Map<ClientConnection, Grace>();
  /** Each watched username's watching connections (logged-in ones only): who hears its presence. */
  #watchers = new Map<string, Set<ClientConnection>>();
  /** Each connection's watch list, to take it out of {@link #watchers} when it changes or ends. */
  #watching = new Map<ClientConnection, Set<string>>();

  /** Creates the (empty) table. */
  constructor(deps: { metrics: Metrics }) {
    this.#metrics = deps.metrics;
    deps.metrics.describe("p2pchat_ws_connections", "gauge", "Open browser WebSockets");
    deps.metrics.describe("p2pchat_sessions", "gauge", "Logged-in users on this server");
  }

  /** Adds a new, not yet logged-in connection. */
  add(conn: ClientConnection): void {
    this.#connections.add(conn);
    this.#gauge();
  }

  /** Removes a connection; returns the session it carried as the user's session, if any. */
  remove(conn: ClientConnection): BoundSession | undefined {
    if (!this.#connections.delete(conn)) return undefined;
    this.#graces.delete(conn);
    const ended = this.unbind(conn);
    this.#gauge();
    return ended;
  }

  /** Whether `conn` is open here (not yet removed). */
  has(conn: ClientConnection): boolean {
    return this.#connections.has(conn);
  }

  /** Every open connection. */
  connections(): ClientConnection[] {
    return [...this.#connections];
  }

  /**
   * Binds `conn` to a session of `username`; it becomes the user's delivery target here unless
   * another connection carries a newer session. Returns the session `conn` carried before, if it
   * was another user's.
   */
  bind(conn: ClientConnection, username: string, session: SessionStamp): BoundSession | undefined {
    const before = this.#bound.get(conn);
    const ended = before && before.username !== username ? this.unbind(conn) : undefined;
    this.#bound.set(conn, { username, session: { ...session } });
    let set = this.#boundByUser.get(username);
    if (!set) this.#boundByUser.set(username, set = new Set());
    set.add(conn);
    const target = this.#byUser.get(username);
    const targetSession = target && this.#bound.get(target)?.session;
    if (!targetSession || !isNewer(targetSession, session)) this.#byUser.set(username, conn);
    this.#gauge();
    return ended;
  }

  /**
   * Takes `conn` out of its user's session; returns that session if `conn` was the user's
   * delivery target and no other connection here carries the user's session (so presence must
   * be written offline).
   */
  unbind(conn: ClientConnection): BoundSession | undefined {
    const bound = this.#bound.get(conn);
    if (!bound) return undefined;
    this.#bound.delete(conn);
    this.#unwatch(conn);
    const set = this.#boundByUser.get(bound.username);
    set?.delete(conn);
    if (set?.size === 0) this.#boundByUser.delete(bound.username);
    if (this.#byUser.get(bound.username) !== conn) return undefined;
    // Another connection of the user (a racing login) takes over as the target: the newest.
    let next: ClientConnection | undefined;
    for (const other of set ?? []) {
      const s = this.#bound.get(other)!.session;
      if (!next || isNewer(s, this.#bound.get(next)!.session)) next = other;
    }
    if (next) this.#byUser.set(bound.username, next);
    else this.#byUser.delete(bound.username);
    this.#gauge();
    return next ? undefined : bound;
  }

  /** Every connection bound to a session of `username` here. */
  boundTo(username: string): ClientConnection[] {
    return [...(this.#boundByUser.get(username) ?? [])];
  }

  /** The session bound to `conn`. */
  sessionOf(conn: ClientConnection): BoundSession | undefined {
    return this.#bound.get(conn);
  }

  /** The connection carrying `username`'s session here. */
  connectionOf(username: string): ClientConnection | undefined {
    return this.#byUser.get(username);
  }

  /** Whether `username` has a session on this server (a lookup, not a scan). */
  hasSession(username: string): boolean {
    return this.#byUser.has(username);
  }

  /** Usernames with a session on this server. */
  onlineUsernames(): string[] {
    return [...this.#byUser.keys()];
  }

  /** Puts a connection (already unbound) into its hand-over grace. */
  beginGrace(conn: ClientConnection, grace: Grace): void {
    this.#graces.set(conn, { username: grace.username, current: { ...grace.current } });
  }

  /** The grace `conn` is in, if any. */
  graceOf(conn: ClientConnection): Grace | undefined {
    return this.#graces.get(conn);
  }

  /** Connections in their hand-over grace. */
  graces(): [ClientConnection, Grace][] {
    return [...this.#graces];
  }

  /**
   * Hands `frame` to `username` here: to the user's session, or for a `handover_signal`, to the
   * side it names (the current session if its id matches, or the connections in their grace that
   * this session superseded), as a plain `signal` from the user. False if nobody took it.
   */
  deliver(username: string, frame: ServerFrame): boolean {
    if (frame.type !== "handover_signal") {
      const conn = this.#byUser.get(username);
      return conn ? conn.send(frame) : false;
    }
    const out: ServerFrame = { v: 1, type: "signal", from: username, data: frame.data };
    if (frame.toward === "current") {
      const conn = this.#byUser.get(username);
      if (!conn || this.#bound.get(conn)?.session.sessionId !== frame.current) return false;
      return conn.send(out);
    }
    let delivered = false;
    for (const [conn, grace] of this.#graces) {
      if (grace.username !== username || grace.current.sessionId !== frame.current) continue;
      delivered = conn.send(out) || delivered;
    }
    return delivered;
  }

  /**
   * Replaces the watch list of `conn` (a logged-in connection) with `usernames`: from now on it
   * hears the presence changes of exactly those users. False when `conn` carries no session.
   */
  watch(conn: ClientConnection, usernames: readonly string[]): boolean {
    if (!this.#bound.has(conn)) return false;
    this.#unwatch(conn);
    const names = new Set(usernames);
    if (names.size === 0) return true;
    this.#watching.set(conn, names);
    for (const name of names) {
      let set = this.#watchers.get(name);
      if (!set) this.#watchers.set(name, set = new Set());
      set.add(conn);
    }
    return true;
  }

  /** The names `conn` watches (empty when none). */
  watchedBy(conn: ClientConnection): string[] {
    return [...(this.#watching.get(conn) ?? [])];
  }

  /** How many connections watch `username` here. */
  watcherCount(username: string): number {
    return this.#watchers.get(username)?.size ?? 0;
  }

  #unwatch(conn: ClientConnection): void {
    const names = this.#watching.get(conn);
    if (!names) return;
    this.#watching.delete(conn);
    for (const name of names) {
      const set = this.#watchers.get(name);
      set?.delete(conn);
      if (set?.size === 0) this.#watchers.delete(name);
    }
  }

  /**
   * Tells the connections watching `username` (but not the user's own) that its status changed;
   * nobody else hears of it.
   */
  broadcastPresence(username: string, online: boolean): void {
    for (const conn of this.#watchers.get(username) ?? []) {
      if (this.#bound.get(conn)?.username === username) continue;
      conn.send({ v: 1, type: "presence", username, online });
    }
  }

  #gauge(): void {
    this.#metrics.set("p2pchat_ws_connections", this.#connections.size);
    this.#metrics.set("p2pchat_sessions", this.#byUser.size);
  }
}
