/**
 * Fakes for unit tests of the users services: in-memory ring records (accounts, presence with
 * a time to live and a primary's expiry sweep, mailboxes), a membership whose peers the test
 * switches on and off, browser connections that record what they were sent, and a builder that
 * wires one server's services exactly as `server/main.ts` does, on a {@link ManualClock}.
 */
import type { AccountRecord, ClusterRequest, ServerFrame } from "../../shared/mod.ts";
import { ManualClock } from "../../shared/clock.ts";
import type { AccountReplacement, MailboxEntry, PresenceRecord } from "../store/mod.ts";
import { accountVersion, mergeAccounts, userRingKey } from "../store/mod.ts";
import { type NewMessage, UnavailableError, UsernameTakenError } from "../replication/mod.ts";
import { Hmac } from "../cluster/mod.ts";
import { Metrics, silentLog } from "../telemetry/mod.ts";
import type {
  AccountRecords,
  ClientConnection,
  ClusterCall,
  MailboxRecords,
  MembershipView,
  PresenceRecords,
} from "./ports.ts";
import type { SessionsOptions } from "./sessions.ts";
import type { PresenceOptions } from "./presence.ts";
import { createUserServices, type UserServices } from "./services.ts";
import { Tokens } from "./tokens.ts";

type Listener = (record: PresenceRecord, online: boolean) => void;

/** A registration's salt and keys for tests that do not use them (every account has both). */
export const TEST_ACCOUNT = {
  salt: "c2FsdC1vZi10ZXN0LWFjYw",
  keys: { encryption: "e".repeat(120), signing: "s".repeat(120), wrapped: "w".repeat(40) },
};

/**
 * The ring's records in memory, shared by every fake server of a test. Presence behaves as on
 * the primary: the newest write wins, and {@link sweep} reports records whose time ran out.
 */
export class FakeRing implements AccountRecords, PresenceRecords, MailboxRecords {
  accounts = new Map<string, AccountRecord>();
  presence = new Map<string, PresenceRecord>();
  mail: MailboxEntry[] = [];
  /** While true every call throws `UnavailableError`, as when no replica answers. */
  unavailable = false;
  #listeners = new Set<Listener>();
  #accountListeners = new Set<(replacement: AccountReplacement) => void>();
  #seq = 0;

  /** Creates the ring on `clock`. */
  constructor(readonly clock: ManualClock, readonly writer = "node-a") {}

  #check(): void {
    if (this.unavailable) throw new UnavailableError("No replica reachable (fake)");
  }

  registerAccount(account: AccountRecord): Promise<void> {
    this.#check();
    const known = this.accounts.get(account.username);
    if (known && accountVersion(known) !== accountVersion(account)) {
      throw new UsernameTakenError(account.username);
    }
    this.accounts.set(account.username, known ? mergeAccounts(known, account) : account);
    return Promise.resolve();
  }

  updateAccount(account: AccountRecord): Promise<void> {
    return this.registerAccount(account);
  }

  getAccount(username: string): Promise<AccountRecord | undefined> {
    this.#check();
    return Promise.resolve(this.accounts.get(username));
  }

  onAccountReplaced(listener: (replacement: AccountReplacement) => void): () => void {
    this.#accountListeners.add(listener);
    return () => this.#accountListeners.delete(listener);
  }

  /**
   * As after a partition healed: `winner`, an older registration of an existing name, replaces
   * it on every copy, and every server is told.
   */
  replaceAccount(winner: AccountRecord): void {
    const loser = this.accounts.get(winner.username);
    this.accounts.set(winner.username, winner);
    if (!loser) return;
    for (const l of this.#accountListeners) l({ winner, loser });
  }

  /** Writes presence as home server `this.writer` would (see {@link as}). */
  publishPresence(
    users: readonly { username: string; online: boolean }[],
    ttlMs: number,
  ): Promise<void> {
    return this.as(this.writer).publishPresence(users, ttlMs);
  }

  /** The presence writer of home server `home`. */
  as(home: string): Pick<PresenceRecords, "publishPresence"> {
    return {
      publishPresence: (users, ttlMs) => {
        this.#check();
        const now = this.clock.now();
        for (const { username, online } of users) {
          const known = this.presence.get(username);
          // An offline write from an old home never hides a newer session elsewhere.
          if (!online && known && known.home !== home) continue;
          const wasOnline = known !== undefined && known.expiresAt > now;
          const record: PresenceRecord = {
            username,
            ringKey: userRingKey(username),
            home,
            updatedAt: now + (this.#seq++ / 1000),
            expiresAt: online ? now + ttlMs : now,
          };
          this.presence.set(username, record);
          if (wasOnline !== online || (online && known?.home !== home)) this.#emit(record, online);
        }
        return Promise.resolve();
      },
    };
  }

  getPresence(username: string): Promise<PresenceRecord | undefined> {
    this.#check();
    return Promise.resolve(this.presence.get(username));
  }

  directory(): Promise<{ usernames: string[]; online: PresenceRecord[] }> {
    const now = this.clock.now();
    return Promise.resolve({
      usernames: [...this.accounts.keys()].sort(),
      online: [...this.presence.values()].filter((r) => r.expiresAt > now),
    });
  }

  onPresenceChange(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The primary's sweep: reports every online record whose time to live ran out. */
  sweep(): void {
    const now = this.clock.now();
    for (const r of this.presence.values()) {
      if (r.expiresAt <= now && r.expiresAt > 0) {
        this.presence.set(r.username, { ...r, expiresAt: 0 });
        this.#emit(r, false);
      }
    }
  }

  #emit(record: PresenceRecord, online: boolean): void {
    for (const l of this.#listeners) l(record, online);
  }

  storeMessages(messages: readonly NewMessage[]): Promise<void> {
    this.#check();
    for (const m of messages) {
      if (!this.mail.some((e) => e.messageId === m.messageId && e.recipient === m.recipient)) {
        this.mail.push({ ...m, ringKey: userRingKey(m.recipient), seq: this.#seq++ });
      }
    }
    return Promise.resolve();
  }

  fetchPending(recipient: string): Promise<MailboxEntry[]> {
    this.#check();
    return Promise.resolve(this.mail.filter((e) => e.recipient === recipient));
  }

  acknowledge(
    recipient: string,
    ids: readonly string[],
  ): Promise<{ messageId: string; sender: string }[]> {
    this.#check();
    const acked = this.mail.filter((e) => e.recipient === recipient && ids.includes(e.messageId));
    this.mail = this.mail.filter((e) => !acked.includes(e));
    return Promise.resolve(acked.map((e) => ({ messageId: e.messageId, sender: e.sender })));
  }
}

/** A membership the test controls: `setAlive` flips a peer and tells the listeners. */
export class FakeMembership implements MembershipView {
  #alive = new Set<string>();
  #listeners = new Set<(address: string, alive: boolean) => void>();

  /** Creates the view of server `self`, with `peers` alive. */
  constructor(readonly self: string, peers: string[] = []) {
    for (const p of peers) this.#alive.add(p);
  }

  liveServers(): string[] {
    return [this.self, ...this.#alive].sort();
  }

  liveBrowserUrls(): string[] {
    return this.liveServers();
  }

  isLive(address: string): boolean {
    return address === this.self || this.#alive.has(address);
  }

  onPeerChange(listener: (address: string, alive: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Marks `address` alive or dead, as a hello round would. */
  setAlive(address: string, alive: boolean): void {
    if (this.#alive.has(address) === alive) return;
    if (alive) this.#alive.add(address);
    else this.#alive.delete(address);
    for (const l of this.#listeners) l(address, alive);
  }
}

/** A browser connection that records the frames it was sent. */
export class FakeConnection implements ClientConnection {
  sent: ServerFrame[] = [];
  closed: { code: number; reason: string } | undefined;
  lastSeen: number;

  /** Creates a connection from `address`, last seen now. */
  constructor(readonly clock: ManualClock, readonly address = "192.0.2.1") {
    this.lastSeen = clock.now();
  }

  send(frame: ServerFrame): boolean {
    if (this.closed) return false;
    this.sent.push(frame);
    return true;
  }

  close(code: number, reason: string): void {
    this.closed ??= { code, reason };
  }

  /** The frames of one type this connection was sent. */
  framesOf<T extends ServerFrame["type"]>(type: T): Extract<ServerFrame, { type: T }>[] {
    return this.sent.filter((f): f is Extract<ServerFrame, { type: T }> => f.type === type);
  }

  /** The close code, once closed. */
  closeCode(): number | undefined {
    return this.closed?.code;
  }

  /** The client sends something: it is alive. */
  touch(): void {
    this.lastSeen = this.clock.now();
  }
}

/** One server's users services, wired as in `server/main.ts`, with the fakes under them. */
export interface FakeServer extends UserServices {
  self: string;
  clock: ManualClock;
  ring: FakeRing;
  membership: FakeMembership;
  metrics: Metrics;
  /** Cluster requests this server sent, in order. */
  calls: { to: string; request: ClusterRequest }[];
}

/** Builds the users services of server `self` on fakes; `call` answers its cluster requests. */
export function fakeServer(options: {
  self?: string;
  clock?: ManualClock;
  ring?: FakeRing;
  peers?: string[];
  call?: ClusterCall;
  sessions?: SessionsOptions;
  presence?: PresenceOptions;
  /** How far behind socket reads are (see `SessionsDeps.ioLag`). */
  ioLag?: () => number;
} = {}): FakeServer {
  const self = options.self ?? "http://node-a:8000";
  const clock = options.clock ?? new ManualClock();
  const ring = options.ring ?? new FakeRing(clock, self);
  const membership = new FakeMembership(self, options.peers);
  const metrics = new Metrics();
  const calls: FakeServer["calls"] = [];
  const call: ClusterCall = (to, request) => {
    calls.push({ to, request });
    return options.call?.(to, request) ?? Promise.resolve({ v: 1, type: "ok" });
  };
  const records = { ...bindAll(ring), publishPresence: ring.as(self).publishPresence };
  const users = createUserServices({
    records,
    membership,
    call,
    tokens: new Tokens(new Hmac("a-test-cluster-secret-of-some-length"), 7 * 86_400_000),
    metrics,
    log: silentLog,
    clock,
    ioLag: options.ioLag,
  }, {
    // bcrypt's cheapest cost keeps the tests fast; the algorithm is the same.
    accounts: { bcryptCost: 4 },
    sessions: options.sessions,
    presence: options.presence,
  });
  return { ...users, self, clock, ring, membership, metrics, calls };
}

/** The ring's methods bound to it, so a record port can be assembled from them. */
function bindAll(ring: FakeRing): AccountRecords & PresenceRecords & MailboxRecords {
  return {
    registerAccount: ring.registerAccount.bind(ring),
    updateAccount: ring.updateAccount.bind(ring),
    getAccount: ring.getAccount.bind(ring),
    onAccountReplaced: ring.onAccountReplaced.bind(ring),
    publishPresence: ring.publishPresence.bind(ring),
    getPresence: ring.getPresence.bind(ring),
    directory: ring.directory.bind(ring),
    onPresenceChange: ring.onPresenceChange.bind(ring),
    storeMessages: ring.storeMessages.bind(ring),
    fetchPending: ring.fetchPending.bind(ring),
    acknowledge: ring.acknowledge.bind(ring),
  };
}
