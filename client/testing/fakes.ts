/**
 * In-memory stand-ins for the servers and for WebRTC, so chat models can talk to each other in a
 * unit test: {@link FakeCluster} plays the servers (accounts, presence, signal and relay routing,
 * offline mailboxes with `mail_send`/`mail_fetch`/`mail_ack` and the `delivered` notice),
 * {@link FakeDirectNetwork} plays WebRTC (an offer/answer handshake through the signals, then
 * message passing). Everything crosses the boundary asynchronously and as a copy, as on a wire.
 */
import type {
  AccountKeys,
  ContactEntry,
  ErrorCode,
  IncomingMail,
  MailReceipt,
  OutgoingMail,
  SignalData,
} from "../../shared/mod.ts";
import type { PeerLink, PeerLinkFactory, PeerLinkHandlers } from "../peer_link.ts";
import {
  type ConnectionStatus,
  type DirectoryKeys,
  type IceGrant,
  ServerError,
  type SessionApi,
  type SessionEvents,
  type SessionInfo,
} from "../session.ts";

let inFlight = 0;

/** Delivers `fn` asynchronously, as a wire would, counting it until it has run. */
function later(fn: () => void): void {
  inFlight++;
  setTimeout(() => {
    inFlight--;
    fn();
  }, 0);
}

/**
 * How many deliveries (frames, replies, signals, data-channel messages) the fakes have in
 * flight: zero when nothing more will arrive unless someone sends.
 */
export function deliveriesInFlight(): number {
  return inFlight;
}

/** The servers of a cluster, as seen by clients. */
export class FakeCluster {
  /** What `iceServers()` answers. */
  ice: IceGrant = { iceServers: [], expiresAt: 0 };
  readonly accounts = new Map<string, string>();
  /** The salt each account registered with. */
  readonly salts = new Map<string, string>();
  /** The keys each account registered with (old accounts have none). */
  readonly keys = new Map<string, AccountKeys>();
  /** Every `get_keys` asked, for assertions. */
  readonly keyLookups: Array<{ by: string; username: string }> = [];
  readonly online = new Map<string, FakeSession>();
  /** Every relay payload routed, for assertions about the path. */
  readonly relayed: Array<{ from: string; to: string; payload: string }> = [];
  /** Stored mailbox messages per recipient, in delivery (arrival) order. */
  readonly mailboxes = new Map<string, IncomingMail[]>();
  /** Every `mail_send` accepted, for assertions. */
  readonly mailSent: Array<{ from: string; to: string; ids: string[] }> = [];
  /** Every `mail_ack` received, for assertions. */
  readonly mailAcked: Array<{ by: string; messages: MailReceipt[] }> = [];
  /** When set, the servers' `delivered` notices are lost (a routing failure between servers). */
  loseDeliveredNotices = false;
  /** When set, `mail_send` is refused with this error (as a full or unavailable store would). */
  mailError: { code: ErrorCode; message: string } | null = null;
  /**
   * When set, a login supersedes the user's session elsewhere, which then keeps this many ms of
   * hand-over grace (0: closed at once), as the real servers do; null keeps both sessions.
   */
  handoverMs: number | null = null;
  /** Users whose next login is told their old device is offline (a deferred hand-over). */
  readonly deferred = new Set<string>();
  /** Logins answered `unavailable` (the account's copies are down) before one goes through. */
  loginsUnavailable = 0;
  /** Users whose next login is told their previous device signed out. */
  readonly signedOut = new Set<string>();
  /** Sessions superseded and in their hand-over grace, per user. */
  readonly handovers = new Map<string, FakeSession>();

  /** A new client session connected to this cluster. */
  connect(): FakeSession {
    return new FakeSession(this);
  }

  /** Delivers `fn` to `to`'s session, or reports `peer_offline` to `from`. */
  route(from: string, to: string, fn: (s: FakeSession) => void): void {
    const target = this.online.get(to);
    if (!target) {
      const sender = this.online.get(from);
      later(() => sender?.events.onServerError?.("peer_offline", `${to} is offline`));
      return;
    }
    later(() => fn(target));
  }

  /** Tells the online users watching `username` (not `username`) about a presence change. */
  broadcast(username: string, online: boolean): void {
    for (const [name, s] of this.online) {
      if (name !== username && s.watching.has(username)) {
        later(() => s.events.onPresence?.(username, online));
      }
    }
  }
}

/** A client's session with a {@link FakeCluster}. */
export class FakeSession implements SessionApi {
  events: SessionEvents = {};
  status: ConnectionStatus = "offline";
  user: string | null = null;
  /** The session kept in this tab's storage (a reload's), resumed by {@link restoreConnection}. */
  stored: SessionInfo | null = null;
  /** No server answers: `start` keeps connecting until {@link restoreConnection}. */
  isUnreachable = false;
  /** The names of the last `watch`: whose presence changes this session hears. */
  watching = new Set<string>();

  constructor(readonly cluster: FakeCluster) {}

  storedSession(): SessionInfo | null {
    return this.stored;
  }

  start(): void {
    this.#setStatus(this.isUnreachable ? "connecting" : "connected");
  }

  register(username: string, secret: string, salt: string, keys: AccountKeys): Promise<void> {
    if (this.cluster.accounts.has(username)) {
      return Promise.reject(new ServerError("username_taken", `Username "${username}" is taken`));
    }
    this.cluster.accounts.set(username, secret);
    this.cluster.salts.set(username, salt);
    this.cluster.keys.set(username, structuredClone(keys));
    return Promise.resolve();
  }

  /** The account's salt; for an unknown name a fixed one of the same form. */
  loginParams(username: string): Promise<string> {
    return Promise.resolve(this.cluster.salts.get(username) ?? "AAAAAAAAAAAAAAAAAAAAAA");
  }

  rekey(salt: string, secret: string, wrapped: string): Promise<void> {
    const me = this.#me();
    this.cluster.accounts.set(me, secret);
    this.cluster.salts.set(me, salt);
    const keys = this.cluster.keys.get(me);
    if (keys) this.cluster.keys.set(me, { ...keys, wrapped });
    return Promise.resolve();
  }

  getKeys(username: string): Promise<DirectoryKeys> {
    const me = this.#me();
    this.cluster.keyLookups.push({ by: me, username });
    if (this.status !== "online") return Promise.reject(this.#disconnected());
    const keys = this.cluster.keys.get(username);
    if (!keys) {
      return Promise.reject(new ServerError("unknown_user", `No public keys for "${username}"`));
    }
    const reply = { encryption: keys.encryption, signing: keys.signing };
    return new Promise((resolve) => later(() => resolve(reply)));
  }

  #info(username: string): SessionInfo {
    const keys = this.cluster.keys.get(username);
    return {
      username,
      token: `token-${username}-0123456789`,
      expiresAt: Date.now() + 3_600_000,
      servers: ["http://127.0.0.1:1"],
      ...(keys ? { keys: structuredClone(keys) } : {}),
      // A legacy account (its salt derived from its name, 32 bytes) is asked to rekey.
      ...(this.cluster.salts.get(username)?.length === 43 ? { rekey: true as const } : {}),
    };
  }

  login(username: string, secret: string): Promise<SessionInfo> {
    if (this.cluster.loginsUnavailable > 0) {
      this.cluster.loginsUnavailable--;
      return Promise.reject(
        new ServerError("unavailable", "The servers holding this account are unreachable"),
      );
    }
    if (this.cluster.accounts.get(username) !== secret) {
      return Promise.reject(new ServerError("wrong_credentials", "Wrong username or password"));
    }
    const older = this.cluster.online.get(username);
    const grace = this.cluster.handoverMs;
    if (older && older !== this && grace !== null) {
      this.cluster.handovers.get(username)?.stop();
      older.user = null;
      older.#setStatus("offline");
      if (grace > 0) {
        older.handingOverAs = username;
        this.cluster.handovers.set(username, older);
        const timer = setTimeout(() => {
          if (older.handingOverAs) {
            older.stop();
            older.events.onHandoverClosed?.();
          }
        }, grace);
        older.#graceTimer = timer;
      }
      later(() =>
        older.events.onSuperseded?.("Signed in elsewhere", grace > 0 ? grace : undefined)
      );
    }
    this.user = username;
    this.watching = new Set();
    this.cluster.online.set(username, this);
    this.cluster.broadcast(username, true);
    this.#setStatus("online");
    const info = this.#info(username);
    if (this.cluster.signedOut.has(username)) {
      return Promise.resolve({ ...info, handover: "signed_out" });
    }
    return Promise.resolve(
      this.cluster.deferred.has(username) ? { ...info, handover: "deferred" } : info,
    );
  }

  resume(): Promise<SessionInfo> {
    return Promise.reject(new ServerError("not_authenticated", "No session"));
  }

  /** No deferred hand-overs in these fakes: every claim is of a session still current. */
  claimHandover(): Promise<number> {
    return Promise.reject(new ServerError("not_superseded", "Not replaced by a newer login"));
  }

  watch(usernames: readonly string[]): Promise<ContactEntry[]> {
    if (this.status !== "online") return Promise.reject(this.#disconnected());
    this.watching = new Set(usernames);
    const users = [...this.watching].map((username) => ({
      username,
      online: username !== this.user && this.cluster.online.has(username),
    }));
    return new Promise((resolve) => later(() => resolve(users)));
  }

  ping(): Promise<number> {
    return Promise.resolve(0);
  }

  iceServers(): Promise<IceGrant> {
    if (this.status !== "online") return Promise.reject(this.#disconnected());
    return Promise.resolve(structuredClone(this.cluster.ice));
  }

  signal(to: string, data: SignalData): void {
    const copy = structuredClone(data);
    const user = this.handingOverAs;
    if (user) {
      // In the hand-over grace: only to oneself, which reaches the current session.
      if (to !== user) return;
      const current = this.cluster.online.get(user);
      if (current) later(() => current.events.onSignal?.(user, copy));
      return;
    }
    const from = this.#me();
    if (to === from) {
      const old = this.cluster.handovers.get(from);
      if (old) later(() => old.events.onSignal?.(from, copy));
      return;
    }
    this.cluster.route(from, to, (s) => s.events.onSignal?.(from, copy));
  }

  relay(to: string, payload: string): void {
    const from = this.#me();
    this.cluster.relayed.push({ from, to, payload });
    this.cluster.route(from, to, (s) => s.events.onRelay?.(from, payload));
  }

  mailSend(to: string, messages: OutgoingMail[]): Promise<void> {
    const from = this.#me();
    if (this.status !== "online") return Promise.reject(this.#disconnected());
    const refusal = this.cluster.mailError;
    if (refusal) return Promise.reject(new ServerError(refusal.code, refusal.message));
    if (!this.cluster.accounts.has(to)) {
      return Promise.reject(new ServerError("unknown_user", `No user named "${to}"`));
    }
    let box = this.cluster.mailboxes.get(to);
    if (!box) this.cluster.mailboxes.set(to, box = []);
    for (const m of structuredClone(messages)) {
      if (!box.some((e) => e.id === m.id)) box.push({ ...m, from });
    }
    this.cluster.mailSent.push({ from, to, ids: messages.map((m) => m.id) });
    // Like the servers: a recipient whose session runs after all is told to fetch.
    const target = this.cluster.online.get(to);
    if (target) later(() => target.events.onMailWaiting?.());
    return new Promise((resolve) => later(resolve));
  }

  mailFetch(): Promise<IncomingMail[]> {
    const me = this.#me();
    if (this.status !== "online") return Promise.reject(this.#disconnected());
    const copy = structuredClone(this.cluster.mailboxes.get(me) ?? []);
    return new Promise((resolve) => later(() => resolve(copy)));
  }

  mailAck(messages: MailReceipt[]): Promise<void> {
    const me = this.#me();
    if (this.status !== "online") return Promise.reject(this.#disconnected());
    this.cluster.mailAcked.push({ by: me, messages: structuredClone(messages) });
    const acked = new Set(messages.map((m) => m.id));
    const box = this.cluster.mailboxes.get(me) ?? [];
    this.cluster.mailboxes.set(me, box.filter((m) => !acked.has(m.id)));
    const bySender = new Map<string, string[]>();
    for (const m of messages) bySender.set(m.from, [...(bySender.get(m.from) ?? []), m.id]);
    for (const [sender, ids] of bySender) {
      const target = this.cluster.online.get(sender);
      if (target && !this.cluster.loseDeliveredNotices) {
        later(() => target.events.onDelivered?.(me, ids));
      }
    }
    return new Promise((resolve) => later(resolve));
  }

  /** The WebSocket drops: the user goes offline for the others; requests fail. */
  dropConnection(): void {
    if (this.user && this.cluster.online.get(this.user) === this) {
      this.cluster.online.delete(this.user);
      this.cluster.broadcast(this.user, false);
    }
    this.#setStatus("connecting");
  }

  /** The WebSocket is back and the session resumed (as after a failover). */
  restoreConnection(): void {
    this.isUnreachable = false;
    this.user ??= this.stored?.username ?? null;
    const username = this.#me();
    this.cluster.online.set(username, this);
    this.cluster.broadcast(username, true);
    this.#setStatus("online");
    later(() => this.events.onResumed?.(this.#info(username)));
  }

  /** Delivers a relay frame claiming to come from `from` (to test forged messages). */
  injectRelay(from: string, payload: string): void {
    later(() => this.events.onRelay?.(from, payload));
  }

  /** Delivers an unsolicited server error. */
  injectError(code: ErrorCode, message: string): void {
    later(() => this.events.onServerError?.(code, message));
  }

  /** The user whose superseded session this is, while in its hand-over grace. */
  handingOverAs: string | null = null;
  #graceTimer: ReturnType<typeof setTimeout> | undefined;

  /** Ends the hand-over grace, if any, and goes offline (the token stays). */
  stop(): void {
    clearTimeout(this.#graceTimer);
    const user = this.handingOverAs;
    if (user && this.cluster.handovers.get(user) === this) this.cluster.handovers.delete(user);
    this.handingOverAs = null;
    if (this.user) this.logout();
    else this.#setStatus("offline");
  }

  logout(): void {
    if (this.user && this.cluster.online.get(this.user) === this) {
      this.cluster.online.delete(this.user);
      this.cluster.broadcast(this.user, false);
    }
    this.user = null;
    this.#setStatus("offline");
  }

  #disconnected(): ServerError {
    return new ServerError("disconnected", "Connection to the server was lost");
  }

  #me(): string {
    if (!this.user) throw new ServerError("not_authenticated", "Not logged in");
    return this.user;
  }

  #setStatus(s: ConnectionStatus): void {
    this.status = s;
    this.events.onStatus?.(s);
  }
}

/** Fake WebRTC: links created by the factories of one network can connect to each other. */
export class FakeDirectNetwork {
  /** When true, handshakes never complete (as if no direct path existed). */
  isBlocked = false;
  /** When true, open links lose every text without closing (the path died unnoticed). */
  isSilent = false;
  /** The ICE servers each link was created with, in creation order. */
  readonly iceServersUsed: unknown[] = [];
  /** Links created, for assertions. */
  readonly created: Array<{ owner: string; remote: string; initiator: boolean }> = [];
  /** Every text sent over a link, for assertions about what crossed the wire. */
  readonly sent: Array<{ from: string; to: string; text: string }> = [];
  #links = new Map<string, FakeLink>();

  /** The link factory used by user `owner`. */
  factoryFor(owner: string): PeerLinkFactory {
    return ({ remote, initiator, iceServers }, handlers) => {
      this.created.push({ owner, remote, initiator });
      this.iceServersUsed.push(iceServers);
      const link = new FakeLink(this, owner, remote, initiator, handlers);
      this.#links.set(`${owner}->${remote}`, link);
      if (initiator) later(() => link.emit({ type: "offer", sdp: `fake-offer-${owner}` }));
      return link;
    };
  }

  /** The current link of `owner` towards `remote`. */
  linkOf(owner: string, remote: string): FakeLink | undefined {
    return this.#links.get(`${owner}->${remote}`);
  }
}

/** One side of a fake direct link. */
export class FakeLink implements PeerLink {
  #partner: FakeLink | null = null;
  #open = false;
  #destroyed = false;

  constructor(
    readonly network: FakeDirectNetwork,
    readonly owner: string,
    readonly remote: string,
    readonly isInitiator: boolean,
    readonly handlers: PeerLinkHandlers,
  ) {}

  get isOpen(): boolean {
    return this.#open && !this.#destroyed;
  }

  emit(data: SignalData): void {
    if (!this.#destroyed) this.handlers.onSignal(data);
  }

  signal(data: SignalData): void {
    if (this.#destroyed || this.network.isBlocked) return;
    if (data.type === "offer" && !this.isInitiator) {
      later(() => this.emit({ type: "answer", sdp: `fake-answer-${this.owner}` }));
    } else if (data.type === "answer" && this.isInitiator) {
      const partner = this.network.linkOf(this.remote, this.owner);
      if (!partner || partner.#destroyed) return;
      this.#partner = partner;
      partner.#partner = this;
      for (const side of [this, partner]) {
        later(() => {
          if (side.#destroyed) return;
          side.#open = true;
          side.handlers.onOpen();
        });
      }
    }
  }

  send(text: string): void {
    if (!this.isOpen || !this.#partner) throw new Error("not open");
    const partner = this.#partner;
    if (this.network.isSilent) return;
    this.network.sent.push({ from: this.owner, to: this.remote, text });
    later(() => {
      if (!partner.#destroyed) partner.handlers.onMessage(text);
    });
  }

  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    const partner = this.#partner;
    if (partner && !partner.#destroyed) {
      later(() => {
        if (!partner.#destroyed) partner.handlers.onClose("remote closed");
      });
    }
  }
}
