/**
 * Replication RPC between servers (signed POST to `/replication/rpc`): coordinated writes and
 * acknowledgements, replica copies, reads, and the anti-entropy exchange (digest → keys → items).
 * {@link parseReplicationRequest} and {@link parseReplicationResponse} are the only ways a body
 * from another node becomes typed.
 */
import {
  type AccountRecord,
  checkString,
  checkUsername,
  MESSAGE_ID_PATTERN,
  ProtocolError,
  readAccountRecord,
  readArray,
  readBoolean,
  readEnvelope,
  readNumber,
  readObject,
  readString,
} from "../../shared/mod.ts";
import type { ItemKey, KeyRange, MailboxEntry, PresenceRecord, Tombstone } from "../store/mod.ts";

/** Version of the replication protocol. */
export const REPLICATION_PROTOCOL_VERSION = 1;
/** Largest envelope a mailbox accepts, in characters. */
export const MAX_ENVELOPE_CHARS = 64 * 1024;
/** Most entries in one message. */
export const MAX_BATCH = 10_000;

const HEX_KEY = { min: 1, max: 64, pattern: /^[0-9a-f]+$/ };
const ID_RULE = { min: 8, max: 64, pattern: MESSAGE_ID_PATTERN };
const TIME = { min: 0, max: 8.64e15, integer: true };

/** Server → server replication requests. */
export type ReplicationRequest =
  | { v: 1; type: "put"; entries: MailboxEntry[]; coordinate: boolean }
  /**
   * Coordinated puts a home server gathered for one primary (group commit): each is handled as
   * its own coordinated put, and answered in `results`, in the same order.
   */
  | { v: 1; type: "put_many"; puts: MailboxEntry[][] }
  | { v: 1; type: "ack"; tombstones: Tombstone[]; coordinate: boolean }
  | {
    v: 1;
    type: "fetch";
    recipient: string;
    ringKey: string;
    coordinate: boolean;
    /**
     * To a replica: message ids the primary holds as pending; the answer names those the replica
     * has tombstoned (acknowledged), in `deleted`.
     */
    ids?: string[];
    /**
     * With `ids`: the primary holds those entries itself, so the replica names the ones it
     * holds as pending in `held` instead of sending them; only the others come whole.
     */
    brief?: boolean;
  }
  | { v: 1; type: "digest"; range: KeyRange }
  | { v: 1; type: "keys"; range: KeyRange }
  | {
    v: 1;
    type: "get_items";
    entries: [string, string][];
    tombstones: [string, string][];
    accounts?: string[];
  }
  | {
    v: 1;
    type: "push";
    entries: MailboxEntry[];
    tombstones: Tombstone[];
    accounts?: AccountRecord[];
  }
  /** `update`: new state of an existing account, refused where the ring holds none. */
  | { v: 1; type: "account_put"; account: AccountRecord; coordinate: boolean; update?: true }
  | { v: 1; type: "account_get"; username: string; coordinate: boolean }
  | { v: 1; type: "presence_put"; records: PresenceRecord[]; coordinate: boolean }
  | { v: 1; type: "presence_get"; username: string; coordinate: boolean }
  | { v: 1; type: "directory" }
  /**
   * Told to every live server by a node whose copy of an account lost to an older registration
   * of the name (after a partition): caches drop the loser, its sessions end.
   */
  | { v: 1; type: "account_replaced"; winner: AccountRecord; loser: AccountRecord };

/** Why a request was refused. */
export type ReplicationErrorCode =
  | "not_responsible"
  | "quorum_failed"
  | "mailbox_full"
  | "quota_exceeded"
  | "username_taken"
  | "bad_request";

/** Server → server replication responses. */
export type ReplicationResponse =
  | {
    v: 1;
    type: "ok";
    count: number;
    /** For a coordinated ack: the sender of each acknowledged entry, as stored. */
    receipts?: { messageId: string; sender: string }[];
  }
  | {
    v: 1;
    type: "entries";
    entries: MailboxEntry[];
    /** Of the `ids` a fetch asked about, those this replica holds a tombstone of. */
    deleted?: string[];
    /** Of the `ids` a `brief` fetch asked about, those this replica holds as pending. */
    held?: string[];
    /**
     * This replica restarted with data it has not yet checked against the other servers'
     * tombstones: what it holds as pending may have been acknowledged while it was down.
     */
    stale?: boolean;
  }
  | { v: 1; type: "digest"; digest: string; count: number }
  | { v: 1; type: "keys"; items: ItemKey[] }
  | {
    v: 1;
    type: "items";
    entries: MailboxEntry[];
    tombstones: Tombstone[];
    accounts?: AccountRecord[];
  }
  | {
    v: 1;
    type: "account";
    account?: AccountRecord;
    /**
     * The answering server is still catching up after it started from an old disk: that it
     * holds no copy says nothing about whether the account exists.
     */
    stale?: boolean;
  }
  | { v: 1; type: "presence"; record?: PresenceRecord }
  | { v: 1; type: "directory"; usernames: string[]; online: PresenceRecord[] }
  | { v: 1; type: "error"; code: ReplicationErrorCode; message: string; replicaSet?: string[] }
  /** The answers to a `put_many`, one per put, in order. */
  | { v: 1; type: "results"; results: ReplicationResponse[] };

function readEntry(value: unknown, path: string): MailboxEntry {
  const o = readObject(value, path);
  return {
    recipient: checkUsername(o.recipient, `${path}.recipient`),
    messageId: readString(o, "messageId", path, ID_RULE),
    ringKey: readString(o, "ringKey", path, HEX_KEY),
    sender: checkUsername(o.sender, `${path}.sender`),
    sentAt: readNumber(o, "sentAt", path, TIME),
    seq: readNumber(o, "seq", path, TIME),
    envelope: readString(o, "envelope", path, { min: 1, max: MAX_ENVELOPE_CHARS }),
  };
}

function readTombstone(value: unknown, path: string): Tombstone {
  const o = readObject(value, path);
  return {
    recipient: checkUsername(o.recipient, `${path}.recipient`),
    messageId: readString(o, "messageId", path, ID_RULE),
    ringKey: readString(o, "ringKey", path, HEX_KEY),
    deletedAt: readNumber(o, "deletedAt", path, TIME),
  };
}

function readPresence(value: unknown, path: string): PresenceRecord {
  const o = readObject(value, path);
  return {
    username: checkUsername(o.username, `${path}.username`),
    ringKey: readString(o, "ringKey", path, HEX_KEY),
    home: readString(o, "home", path, { min: 8, max: 300, pattern: /^https?:\/\/[^\s/]+$/ }),
    updatedAt: readNumber(o, "updatedAt", path, TIME),
    expiresAt: readNumber(o, "expiresAt", path, TIME),
  };
}

/** Optional array field: absent stays absent (older senders), present is validated. */
function readOptionalArray<T>(
  obj: Record<string, unknown>,
  key: string,
  max: number,
  read: (value: unknown, path: string) => T,
): { [k: string]: T[] } {
  return obj[key] === undefined ? {} : { [key]: readArray(obj, key, "", max, read) };
}

const readUser = (value: unknown, path: string) => checkUsername(value, path);
const readMessageId = (value: unknown, path: string) => checkString(value, path, ID_RULE);

function readRange(value: unknown, path: string): KeyRange {
  const o = readObject(value, path);
  return { start: readString(o, "start", path, HEX_KEY), end: readString(o, "end", path, HEX_KEY) };
}

function readPair(value: unknown, path: string): [string, string] {
  if (!Array.isArray(value) || value.length !== 2) {
    throw new ProtocolError("bad_frame", path, `Invalid field "${path}": expected [recipient, id]`);
  }
  return [checkUsername(value[0], `${path}.0`), checkString(value[1], `${path}.1`, ID_RULE)];
}

/** An account copy's identity: its registration's version, then a stamp of its state. */
const ACCOUNT_VERSION = {
  min: 3,
  max: 100,
  pattern: /^\d+\.[./A-Za-z0-9]{1,12}(~[A-Za-z0-9]{1,60})?$/,
};

function readItemKey(value: unknown, path: string): ItemKey {
  const isEntry = Array.isArray(value) && value[0] === "m" && value.length === 4;
  if (
    !Array.isArray(value) || (value.length !== 3 && !isEntry) ||
    !["m", "t", "a"].includes(value[0])
  ) {
    throw new ProtocolError(
      "bad_frame",
      path,
      `Invalid field "${path}": expected ["m"|"t"|"a", user, id] or ["m", user, id, seq]`,
    );
  }
  if (isEntry) {
    const [recipient, id] = readPair([value[1], value[2]], path);
    const seq = value[3];
    if (typeof seq !== "number" || !Number.isInteger(seq) || seq < 0 || seq > TIME.max) {
      throw new ProtocolError(
        "bad_frame",
        `${path}.3`,
        `Invalid field "${path}.3": expected a seq`,
      );
    }
    return ["m", recipient, id, seq];
  }
  if (value[0] === "a") {
    return [
      "a",
      checkUsername(value[1], `${path}.1`),
      checkString(value[2], `${path}.2`, ACCOUNT_VERSION),
    ];
  }
  const [recipient, id] = readPair([value[1], value[2]], path);
  return [value[0], recipient, id];
}

/** Validates a decoded replication request. */
export function parseReplicationRequest(value: unknown): ReplicationRequest {
  const { obj, type } = readEnvelope(value, REPLICATION_PROTOCOL_VERSION, [
    "put",
    "put_many",
    "ack",
    "fetch",
    "digest",
    "keys",
    "get_items",
    "push",
    "account_put",
    "account_get",
    "presence_put",
    "presence_get",
    "directory",
    "account_replaced",
  ]);
  switch (type as ReplicationRequest["type"]) {
    case "put":
      return {
        v: 1,
        type: "put",
        entries: readArray(obj, "entries", "", MAX_BATCH, readEntry),
        coordinate: readBoolean(obj, "coordinate", ""),
      };
    case "put_many":
      return {
        v: 1,
        type: "put_many",
        puts: readArray(
          obj,
          "puts",
          "",
          MAX_BATCH,
          (value, path) => readArray({ entries: value }, "entries", path, MAX_BATCH, readEntry),
        ),
      };
    case "ack":
      return {
        v: 1,
        type: "ack",
        tombstones: readArray(obj, "tombstones", "", MAX_BATCH, readTombstone),
        coordinate: readBoolean(obj, "coordinate", ""),
      };
    case "fetch":
      return {
        v: 1,
        type: "fetch",
        recipient: checkUsername(obj.recipient, "recipient"),
        ringKey: readString(obj, "ringKey", "", HEX_KEY),
        coordinate: readBoolean(obj, "coordinate", ""),
        ...readOptionalArray(obj, "ids", 1_000_000, readMessageId),
        ...(obj.brief === undefined ? {} : { brief: readBoolean(obj, "brief", "") }),
      };
    case "digest":
    case "keys":
      return { v: 1, type: type as "digest" | "keys", range: readRange(obj.range, "range") };
    case "get_items":
      return {
        v: 1,
        type: "get_items",
        entries: readArray(obj, "entries", "", 1_000_000, readPair),
        tombstones: readArray(obj, "tombstones", "", 1_000_000, readPair),
        ...readOptionalArray(obj, "accounts", 1_000_000, readUser),
      };
    case "push":
      return {
        v: 1,
        type: "push",
        entries: readArray(obj, "entries", "", 1_000_000, readEntry),
        tombstones: readArray(obj, "tombstones", "", 1_000_000, readTombstone),
        ...readOptionalArray(obj, "accounts", 1_000_000, readAccountRecord),
      };
    case "account_put":
      return {
        v: 1,
        type: "account_put",
        account: readAccountRecord(obj.account, "account"),
        coordinate: readBoolean(obj, "coordinate", ""),
        ...(obj.update === true ? { update: true as const } : {}),
      };
    case "account_get":
    case "presence_get":
      return {
        v: 1,
        type: type as "account_get" | "presence_get",
        username: checkUsername(obj.username, "username"),
        coordinate: readBoolean(obj, "coordinate", ""),
      };
    case "presence_put":
      return {
        v: 1,
        type: "presence_put",
        records: readArray(obj, "records", "", MAX_BATCH, readPresence),
        coordinate: readBoolean(obj, "coordinate", ""),
      };
    case "directory":
      return { v: 1, type: "directory" };
    case "account_replaced": {
      const winner = readAccountRecord(obj.winner, "winner");
      const loser = readAccountRecord(obj.loser, "loser");
      if (winner.username !== loser.username) {
        throw new ProtocolError("bad_frame", "loser.username", "Winner and loser differ in name");
      }
      return { v: 1, type: "account_replaced", winner, loser };
    }
  }
}

/** Validates a decoded replication response. */
export function parseReplicationResponse(value: unknown): ReplicationResponse {
  return readResponse(value, true);
}

function readResponse(value: unknown, mayNest: boolean): ReplicationResponse {
  const { obj, type } = readEnvelope(value, REPLICATION_PROTOCOL_VERSION, [
    "ok",
    "entries",
    "digest",
    "keys",
    "items",
    "account",
    "presence",
    "directory",
    "error",
    "results",
  ]);
  switch (type as ReplicationResponse["type"]) {
    case "ok":
      return {
        v: 1,
        type: "ok",
        count: readNumber(obj, "count", "", { min: 0, max: 1e9, integer: true }),
        ...readOptionalArray(obj, "receipts", MAX_BATCH, (value, path) => {
          const o = readObject(value, path);
          return {
            messageId: readString(o, "messageId", path, ID_RULE),
            sender: readUser(o.sender, `${path}.sender`),
          };
        }),
      };
    case "entries":
      return {
        v: 1,
        type: "entries",
        entries: readArray(obj, "entries", "", 1_000_000, readEntry),
        ...readOptionalArray(obj, "deleted", 1_000_000, readMessageId),
        ...readOptionalArray(obj, "held", 1_000_000, readMessageId),
        ...(obj.stale === undefined ? {} : { stale: readBoolean(obj, "stale", "") }),
      };
    case "digest":
      return {
        v: 1,
        type: "digest",
        digest: readString(obj, "digest", "", HEX_KEY),
        count: readNumber(obj, "count", "", { min: 0, max: 1e12, integer: true }),
      };
    case "keys":
      return { v: 1, type: "keys", items: readArray(obj, "items", "", 10_000_000, readItemKey) };
    case "items":
      return {
        v: 1,
        type: "items",
        entries: readArray(obj, "entries", "", 1_000_000, readEntry),
        tombstones: readArray(obj, "tombstones", "", 1_000_000, readTombstone),
        ...readOptionalArray(obj, "accounts", 1_000_000, readAccountRecord),
      };
    case "account":
      return {
        v: 1,
        type: "account",
        ...(obj.account === undefined
          ? {}
          : { account: readAccountRecord(obj.account, "account") }),
        ...(obj.stale === undefined ? {} : { stale: readBoolean(obj, "stale", "") }),
      };
    case "presence":
      return obj.record === undefined
        ? { v: 1, type: "presence" }
        : { v: 1, type: "presence", record: readPresence(obj.record, "record") };
    case "directory":
      return {
        v: 1,
        type: "directory",
        usernames: readArray(obj, "usernames", "", 10_000_000, readUser),
        online: readArray(obj, "online", "", 10_000_000, readPresence),
      };
    case "error": {
      const code = readString(obj, "code", "", { min: 1, max: 40 }) as ReplicationErrorCode;
      const response: ReplicationResponse = {
        v: 1,
        type: "error",
        code,
        message: readString(obj, "message", "", { max: 1000 }),
      };
      if (obj.replicaSet !== undefined) {
        response.replicaSet = readArray(
          obj,
          "replicaSet",
          "",
          64,
          (v, p) => checkString(v, p, { min: 1, max: 300 }),
        );
      }
      return response;
    }
    case "results":
      if (!mayNest) throw new ProtocolError("bad_frame", "type", "Results within results");
      return {
        v: 1,
        type: "results",
        results: readArray(obj, "results", "", MAX_BATCH, (v) => readResponse(v, false)),
      };
  }
}
