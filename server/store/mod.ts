/**
 * Node storage in SQLite (built-in `node:sqlite`, WAL, synchronous=FULL): one database file per
 * server node, schema migrated by `PRAGMA user_version`. It owns durability of what the node
 * holds; it does not decide placement (replication does) nor talk to the network.
 */
export { NodeStore } from "./accounts.ts";
export {
  type ItemKey,
  type KeyRange,
  type MailboxEntry,
  MailboxStore,
  type Tombstone,
} from "./mailbox.ts";
