/**
 * Server ↔ server RPC beside the ring: membership hellos, presence notices from the primary of a
 * user's presence record, and delivery of signaling/relay/session frames to a user's home server.
 * Every request is an HTTP POST authenticated with an HMAC over the cluster secret; the bodies are
 * validated here.
 * The CHORD ring (server/chord) brings its own ring RPC; these cover what rides beside it.
 */
import {
  checkString,
  type ErrorCode,
  parseJsonFrame,
  ProtocolError,
  readArray,
  readBoolean,
  readEnvelope,
  readNumber,
  readObject,
  readString,
} from "./validate.ts";
import {
  type AccountKeys,
  readAccountKeys,
  readUsername,
  SALT_RULE,
  type ServerFrame,
  validateServerFrame,
} from "./protocol.ts";

/** Version of the server ↔ server protocol. */
export const CLUSTER_PROTOCOL_VERSION = 1;
/** Largest cluster RPC body in bytes. */
export const MAX_CLUSTER_BODY = 8 * 1024 * 1024;

/** An account as replicated between servers: the server never holds the secret itself. */
export interface AccountRecord {
  username: string;
  /** bcrypt hash of the secret. */
  hash: string;
  createdAt: number;
  /** Public keys and wrapped private keys, when the client registered with keys. */
  keys?: AccountKeys;
  /**
   * The random PBKDF2 salt the browser derived `hash`'s secret with (16 bytes, base64url).
   * Absent for a legacy account, salted with SHA-256("p2p-chat:" + username).
   */
  salt?: string;
  /**
   * New credentials set after registration (a legacy account's move to a random salt): they
   * replace `salt`, `hash` and `keys.wrapped` for logins; the registration itself (its version)
   * stays the same. Of two, the later `at` wins.
   */
  rekeyed?: AccountRekey;
  /** The user's newest session: any other token of the user is refused. */
  session?: AccountSession;
}

/** Credentials that replaced a registration's (see {@link AccountRecord.rekeyed}). */
export interface AccountRekey {
  salt: string;
  hash: string;
  wrapped: string;
  /** When the credentials changed (the writing server's clock). */
  at: number;
}

/** The newest session of a user, as the ring keeps it with the account. */
export interface AccountSession {
  id: string;
  issuedAt: number;
  /** The user signed out of it (`logout`): its tokens are refused. */
  ended?: boolean;
  /** Generation of the session's current refresh token; older ones are refused. */
  refresh?: number;
}

/** Server → server requests. */
export type ClusterRequest =
  /** `browserUrl`: the sender's base URL as browsers reach it, when it differs from `from`. */
  | { v: 1; type: "hello"; from: string; peers: string[]; browserUrl?: string }
  | {
    v: 1;
    type: "presence";
    username: string;
    home: string;
    online: boolean;
    updatedAt: number;
  }
  /**
   * Several status notices at once (those that queued for the receiver while an earlier notice
   * to it was in flight), each as a `presence` request's fields.
   */
  | { v: 1; type: "presence_batch"; notices: PresenceNotice[] }
  | { v: 1; type: "deliver"; to: string; frame: ServerFrame }
  /**
   * Several deliveries at once (those that queued for the receiver while an earlier one to it
   * was in flight); answered by `deliver_results`, in the same order.
   */
  | { v: 1; type: "deliver_batch"; items: Delivery[] };

/** A frame for user `to` on the receiving server. */
export interface Delivery {
  to: string;
  frame: ServerFrame;
}

/** Most deliveries in one `deliver_batch`. */
export const MAX_DELIVER_BATCH = 500;

/** A status notice: `username`'s session on `home` began (`online`) or ended. */
export interface PresenceNotice {
  username: string;
  home: string;
  online: boolean;
  updatedAt: number;
}

/** Most notices in one `presence_batch`. */
export const MAX_PRESENCE_BATCH = 2000;

/** Server → server responses. */
export type ClusterResponse =
  | { v: 1; type: "ok" }
  | { v: 1; type: "error"; code: ErrorCode; message: string }
  | { v: 1; type: "hello"; peers: string[]; browserUrl?: string }
  /** Per item of a `deliver_batch`: whether a connection of the user here took it. */
  | { v: 1; type: "deliver_results"; delivered: boolean[] };

const REQUEST_TYPES = ["hello", "presence", "presence_batch", "deliver", "deliver_batch"] as const;
const RESPONSE_TYPES = ["ok", "error", "hello", "deliver_results"] as const;
const ADDRESS_RULE = { min: 8, max: 300, pattern: /^https?:\/\/[^\s/]+$/ };
const MAX_PEERS = 1024;

function readAddress(value: unknown, path: string): string {
  return checkString(value, path, ADDRESS_RULE);
}

/** The optional `browserUrl` of a hello, validated like an address. */
function readBrowserUrl(obj: Record<string, unknown>): { browserUrl?: string } {
  return obj.browserUrl === undefined
    ? {}
    : { browserUrl: readAddress(obj.browserUrl, "browserUrl") };
}

/** Validates an account record received from another server. */
export function readAccountRecord(value: unknown, path: string): AccountRecord {
  const obj = readObject(value, path);
  return {
    username: readUsername(obj, "username", path),
    hash: readString(obj, "hash", path, { min: 20, max: 100, pattern: /^\$2[aby]\$\d\d\$/ }),
    createdAt: readNumber(obj, "createdAt", path, { min: 0, max: 8.64e15, integer: true }),
    ...(obj.keys === undefined ? {} : { keys: readAccountKeys(obj.keys, `${path}.keys`) }),
    ...(obj.salt === undefined ? {} : { salt: readSalt(obj.salt, `${path}.salt`) }),
    ...(obj.rekeyed === undefined ? {} : { rekeyed: readRekey(obj.rekeyed, `${path}.rekeyed`) }),
    ...(obj.session === undefined
      ? {}
      : { session: readAccountSession(obj.session, `${path}.session`) }),
  };
}

const HASH_RULE = { min: 20, max: 100, pattern: /^\$2[aby]\$\d\d\$/ };
const TIME_RULE = { min: 0, max: 8.64e15, integer: true };

function readSalt(value: unknown, path: string): string {
  return checkString(value, path, SALT_RULE);
}

function readRekey(value: unknown, path: string): AccountRekey {
  const obj = readObject(value, path);
  return {
    salt: readSalt(obj.salt, `${path}.salt`),
    hash: readString(obj, "hash", path, HASH_RULE),
    wrapped: readString(obj, "wrapped", path, { min: 1, max: 20_000 }),
    at: readNumber(obj, "at", path, TIME_RULE),
  };
}

function readAccountSession(value: unknown, path: string): AccountSession {
  const obj = readObject(value, path);
  return {
    id: readString(obj, "id", path, { min: 1, max: 64, pattern: /^[A-Za-z0-9_-]+$/ }),
    issuedAt: readNumber(obj, "issuedAt", path, TIME_RULE),
    ...(obj.ended === undefined ? {} : { ended: readBoolean(obj, "ended", path) }),
    ...(obj.refresh === undefined
      ? {}
      : { refresh: readNumber(obj, "refresh", path, { min: 0, max: 1e12, integer: true }) }),
  };
}

function readPresenceNotice(obj: Record<string, unknown>, path: string): PresenceNotice {
  return {
    username: readUsername(obj, "username", path),
    home: readAddress(obj.home, path ? `${path}.home` : "home"),
    online: readBoolean(obj, "online", path),
    updatedAt: readNumber(obj, "updatedAt", path, { min: 0, max: 8.64e15, integer: true }),
  };
}

/** Validates a decoded cluster request. */
export function validateClusterRequest(value: unknown): ClusterRequest {
  const { obj, type } = readEnvelope(value, CLUSTER_PROTOCOL_VERSION, REQUEST_TYPES);
  switch (type as ClusterRequest["type"]) {
    case "hello":
      return {
        v: 1,
        type: "hello",
        from: readAddress(obj.from, "from"),
        peers: readArray(obj, "peers", "", MAX_PEERS, readAddress),
        ...readBrowserUrl(obj),
      };
    case "presence":
      return { v: 1, type: "presence", ...readPresenceNotice(obj, "") };
    case "presence_batch":
      return {
        v: 1,
        type: "presence_batch",
        notices: readArray(
          obj,
          "notices",
          "",
          MAX_PRESENCE_BATCH,
          (value, path) => readPresenceNotice(readObject(value, path), path),
        ),
      };
    case "deliver":
      return { v: 1, type: "deliver", ...readDelivery(obj, "") };
    case "deliver_batch":
      return {
        v: 1,
        type: "deliver_batch",
        items: readArray(
          obj,
          "items",
          "",
          MAX_DELIVER_BATCH,
          (value, path) => readDelivery(readObject(value, path), path),
        ),
      };
  }
}

/** Besides what reaches browsers, the session notices the receiving hub consumes. */
const DELIVERABLE: readonly ServerFrame["type"][] = [
  "signal",
  "relay",
  "delivered",
  "mail_waiting",
  "session_started",
  "session_ended",
  "handover_signal",
];

function readDelivery(obj: Record<string, unknown>, path: string): Delivery {
  const at = (key: string) => path ? `${path}.${key}` : key;
  const frame = validateServerFrame(obj.frame);
  if (!DELIVERABLE.includes(frame.type)) {
    throw new ProtocolError(
      "bad_frame",
      at("frame.type"),
      `Only ${DELIVERABLE.join(", ")} frames can be delivered`,
    );
  }
  return { to: readUsername(obj, "to", path), frame };
}

/** Decodes and validates a cluster request body. */
export function parseClusterRequest(text: unknown): ClusterRequest {
  return validateClusterRequest(parseJsonFrame(text, MAX_CLUSTER_BODY));
}

/** Decodes and validates a cluster response body. */
export function parseClusterResponse(text: unknown): ClusterResponse {
  const { obj, type } = readEnvelope(
    parseJsonFrame(text, MAX_CLUSTER_BODY),
    CLUSTER_PROTOCOL_VERSION,
    RESPONSE_TYPES,
  );
  switch (type as ClusterResponse["type"]) {
    case "ok":
      return { v: 1, type: "ok" };
    case "error":
      return {
        v: 1,
        type: "error",
        code: readString(obj, "code", "", { min: 1, max: 40 }) as ErrorCode,
        message: readString(obj, "message", "", { max: 1000 }),
      };
    case "hello":
      return {
        v: 1,
        type: "hello",
        peers: readArray(obj, "peers", "", MAX_PEERS, readAddress),
        ...readBrowserUrl(obj),
      };
    case "deliver_results":
      return {
        v: 1,
        type: "deliver_results",
        delivered: readArray(obj, "delivered", "", MAX_DELIVER_BATCH, (value, path) => {
          if (typeof value !== "boolean") throw new ProtocolError("bad_frame", path, "a boolean");
          return value;
        }),
      };
  }
}
