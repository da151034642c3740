/**
 * The users layer (DESIGN §2): accounts, sessions (tokens, one session per user, the hand-over
 * grace), presence, routing of frames to a user's home server, and offline mailboxes as users
 * see them. Each is a class taking `(deps, options)` with narrow ports to the layers below
 * (replicated records, the cluster's membership and signed calls) and to the browser edge (a
 * {@link ClientConnection} per socket); `createUserServices` builds them in dependency order:
 * `LocalSessions` → `Presence` → `Routing` → `Accounts` → `Sessions`, `Mailboxes`. Every refusal
 * is a {@link UserError} with a protocol error code. It does not parse frames or own sockets:
 * that is `server/api`.
 */
export {
  Accounts,
  type AccountsDeps,
  type AccountsOptions,
  type Registration,
} from "./accounts.ts";
export { UNAVAILABLE_MESSAGE, UserError } from "./errors.ts";
export { type BoundSession, type Grace, LocalSessions } from "./local_sessions.ts";
export { Mailboxes, type MailboxesDeps } from "./mailboxes.ts";
export type {
  AccountRecords,
  ClientConnection,
  ClusterCall,
  MailboxRecords,
  MembershipView,
  PresenceRecords,
} from "./ports.ts";
export { Presence, type PresenceDeps, type PresenceOptions } from "./presence.ts";
export {
  type AbuseLimits,
  addressKey,
  type BucketRule,
  DEFAULT_KEY_LOOKUPS,
  DEFAULT_LIMITS,
  KeyedLimiter,
  KeyLookupLimiter,
  type KeyLookupRules,
  TokenBucket,
} from "./rate_limit.ts";
export { Routing, type RoutingDeps } from "./routing.ts";
export {
  addressRingKey,
  type Charge,
  LocalLimits,
  RingLimits,
  type RingLimitsDeps,
  type RingLimitsOptions,
  type SharedLimitRules,
  type SharedLimits,
} from "./shared_limits.ts";
export {
  createUserServices,
  type UserServices,
  type UserServicesDeps,
  type UserServicesOptions,
} from "./services.ts";
export { isNewer, SessionRegistry, type SessionStamp } from "./session_registry.ts";
export {
  HANDOVER_GRACE_MS,
  HANDOVER_ONLY_MESSAGE,
  type SessionGrant,
  Sessions,
  type SessionsDeps,
  type SessionsOptions,
  SUPERSEDED_MESSAGE,
} from "./sessions.ts";
export { type SessionClaims, TokenError, Tokens } from "./tokens.ts";
export {
  type IceGrant,
  IceServers,
  type IceServersDeps,
  type IceServersOptions,
  turnCredential,
} from "./ice_servers.ts";
