/**
 * The narrow ports the users services need from the layers below and from the browser edge, as
 * interfaces this folder owns: the replicator, the cluster membership and its signed transport
 * satisfy them in the server; unit tests pass fakes.
 */
import type {
  AccountRecord,
  ClusterRequest,
  ClusterResponse,
  ServerFrame,
} from "../../shared/mod.ts";
import type { AccountReplacement, MailboxEntry, PresenceRecord } from "../store/mod.ts";
import type { NewMessage } from "../replication/mod.ts";

/** Accounts as ring records (the `Replicator` satisfies it). */
export interface AccountRecords {
  /** Stores a new account on W copies; throws `UsernameTakenError` or `UnavailableError`. */
  registerAccount(account: AccountRecord): Promise<void>;
  /**
   * Stores new state of an existing account (rekey, newest session) on W copies, merged with
   * what each copy holds; throws `UsernameTakenError` (the registration lost its name) or
   * `UnavailableError`.
   */
  updateAccount(account: AccountRecord): Promise<void>;
  /** The account as its replica set holds it; throws `UnavailableError`. */
  getAccount(username: string): Promise<AccountRecord | undefined>;
  /**
   * Subscribes to registrations that lost to an older one of the same name (after a partition),
   * wherever in the cluster a copy was replaced.
   */
  onAccountReplaced(listener: (replacement: AccountReplacement) => void): () => void;
}

/** Presence as ring records (the `Replicator` satisfies it). */
export interface PresenceRecords {
  /** Writes local sessions' presence: online ones valid for `ttlMs`, the others offline. */
  publishPresence(
    users: readonly { username: string; online: boolean }[],
    ttlMs: number,
  ): Promise<void>;
  /** The user's presence record from the ring. */
  getPresence(username: string): Promise<PresenceRecord | undefined>;
  /** Every username and online record the given servers hold. */
  directory(servers: readonly string[]): Promise<{ usernames: string[]; online: PresenceRecord[] }>;
  /** Subscribes to status changes of records this node is primary for. */
  onPresenceChange(listener: (record: PresenceRecord, online: boolean) => void): () => void;
}

/** Offline mailboxes as ring records (the `Replicator` satisfies it). */
export interface MailboxRecords {
  /** Stores messages on W copies; throws `MailboxFullError` or `UnavailableError`. */
  storeMessages(messages: readonly NewMessage[]): Promise<void>;
  /** Every pending entry of `recipient`, in delivery order. */
  fetchPending(recipient: string): Promise<MailboxEntry[]>;
  /** Deletes acknowledged entries on every copy; returns their stored senders. */
  acknowledge(
    recipient: string,
    messageIds: readonly string[],
  ): Promise<{ messageId: string; sender: string }[]>;
}

/** Which servers are alive (the cluster's `Membership` satisfies it). */
export interface MembershipView {
  /** This server's base URL. */
  readonly self: string;
  /** This server and every live peer, sorted. */
  liveServers(): string[];
  /** The base URLs browsers reach this server and the live peers at (their fail-over list). */
  liveBrowserUrls(): string[];
  /** Whether `address` is this server or a live peer. */
  isLive(address: string): boolean;
  /** Subscribes to peers going up or down. */
  onPeerChange(listener: (address: string, alive: boolean) => void): () => void;
}

/** Sends one signed cluster request to another server (rejects when it cannot be reached). */
export type ClusterCall = (address: string, request: ClusterRequest) => Promise<ClusterResponse>;

/** One browser connection, as the users layer sees it (the API's WebSocket wrapper). */
export interface ClientConnection {
  /** The client's IP address, for login limits. */
  readonly address: string;
  /** When the client last sent anything (ms, on the services' clock). */
  readonly lastSeen: number;
  /** Sends a frame; false when the connection is no longer open. */
  send(frame: ServerFrame): boolean;
  /** Closes the connection (idempotent). */
  close(code: number, reason: string): void;
}
