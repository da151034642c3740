/**
 * Node storage in SQLite (built-in `node:sqlite`, WAL, synchronous=FULL): one database file per
 * server node, schema migrated by `PRAGMA user_version`. It owns durability of what the node
 * holds (accounts, presence, mailboxes); it does not decide placement (replication does) nor
 * talk to the network.
 */
export {
  type AccountReplacement,
  NodeStore,
  type NodeStoreOptions,
  type RingItems,
} from "./node_store.ts";
export {
  accountItemId,
  AccountStore,
  accountVersion,
  credentialsOf,
  mergeAccounts,
  mergeSessions,
  type PutResult,
  winsOver,
} from "./accounts.ts";
export { type PresenceRecord, PresenceStore } from "./presence.ts";
export { userRingKey } from "./ring_key.ts";
export {
  type ItemKey,
  type KeyRange,
  type MailboxEntry,
  type MailboxRow,
  MailboxStore,
  toEntry,
  type Tombstone,
  type TombstoneRow,
  toTombstone,
} from "./mailbox.ts";
