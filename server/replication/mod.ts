/**
 * Replicated ring storage of accounts, presence and offline mailboxes (DESIGN §3): placement on
 * the primary for the user's ring key plus K successors, writes acknowledged after W durable copies, reads
 * merged by message id, acknowledgements as tombstones on every copy, and a repair round
 * (anti-entropy by range digest, hand-off before drop) that restores K + 1 copies after joins,
 * leaves and crashes. It reaches the ring only through {@link RingAccess} and other nodes only
 * through a {@link PeerCall}; it owns no sockets and no ring logic.
 */
export {
  MAX_ENVELOPE_CHARS,
  parseReplicationRequest,
  parseReplicationResponse,
  REPLICATION_PROTOCOL_VERSION,
  type ReplicationErrorCode,
  type ReplicationRequest,
  type ReplicationResponse,
} from "./messages.ts";
export type { RingAccess, RingMember } from "./ring_access.ts";
export {
  type AccountReplacedListener,
  DEFAULT_SENDER_BYTES,
  LARGE_ENTRY,
  MailboxFullError,
  type NewMessage,
  type PeerCall,
  type PresenceListener,
  QuotaExceededError,
  type ReplicationMetrics,
  Replicator,
  type ReplicatorDeps,
  type ReplicatorOptions,
  SYNC_SKIP_MAX_MS,
  TOMBSTONE_GC_EVERY_MS,
  TOMBSTONE_MARGIN_MS,
  TooOldError,
  UnavailableError,
  UsernameTakenError,
} from "./replicator.ts";
