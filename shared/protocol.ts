/**
 * Frames exchanged between a browser and its home server over the WebSocket. Every frame is a
 * JSON object with `v` (protocol version) and `type`; {@link parseClientFrame} and
 * {@link parseServerFrame} are the only ways untrusted text becomes a typed frame.
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
import { SECRET_RULE, USERNAME_PATTERN, USERNAME_RULE } from "./username.ts";

/** Version of the browser ↔ server protocol. */
export const PROTOCOL_VERSION = 1;
/** Largest WebSocket frame a server accepts, in bytes (characters of JSON). */
export const MAX_FRAME_BYTES = 64 * 1024;
/** Largest serialized WebRTC signal (SDP offer/answer or ICE candidate) relayed, in bytes. */
export const MAX_SIGNAL_BYTES = 16 * 1024;
/** Largest opaque payload relayed through the servers, in characters. */
export const MAX_RELAY_PAYLOAD = 16 * 1024;

/** How often a connected client sends `heartbeat`, in milliseconds. */
export const HEARTBEAT_INTERVAL_MS = 5_000;
/** A client silent for this long is considered offline, in milliseconds. */
export const PRESENCE_TIMEOUT_MS = 15_000;

/** Request ids let a client match a reply to its request. */
type ReqId = number;

/**
 * A user's public keys and password-wrapped private keys, as the directory keeps them. Servers
 * store and hand them out but cannot use the private keys: only the user's browser can unwrap.
 */
export interface AccountKeys {
  /** RSA-OAEP public key (encryption), SPKI in base64url. */
  encryption: string;
  /** RSA-PSS public key (signatures), SPKI in base64url. */
  signing: string;
  /** The private keys wrapped with the user's wrapping key: opaque to servers. */
  wrapped: string;
}

/** A user's public keys (SPKI base64url). */
export interface PublicKeys {
  encryption: string;
  signing: string;
}

/**
 * A PBKDF2 salt as it travels (base64url): 16 random bytes (22 characters) for accounts and for
 * unknown names; 32 bytes (43 characters) for a legacy account, SHA-256("p2p-chat:" + name).
 */
export const SALT_RULE = { min: 22, max: 43, pattern: /^[A-Za-z0-9_-]{22}([A-Za-z0-9_-]{21})?$/ };

/** Client → server frames. */
export type ClientFrame =
  /**
   * A new account: `secret` is derived with the random `salt` the browser chose, and every
   * account has keys (a registration without them is refused with `keys_required`).
   */
  | {
    v: 1;
    type: "register";
    reqId: ReqId;
    username: string;
    secret: string;
    salt: string;
    keys: AccountKeys;
  }
  /** Asks, before logging in, for the salt to derive `username`'s secret with. */
  | { v: 1; type: "login_params"; reqId: ReqId; username: string }
  | { v: 1; type: "login"; reqId: ReqId; username: string; secret: string }
  | { v: 1; type: "resume"; reqId: ReqId; token: string }
  /** Trades the session's refresh token for a new token pair (the old refresh token dies). */
  | { v: 1; type: "refresh"; reqId: ReqId; refreshToken: string }
  /**
   * Replaces the logged-in account's credentials: a new random salt, the secret derived with it
   * and the private keys wrapped again (a legacy account's move, asked for by `session.rekey`).
   */
  | { v: 1; type: "rekey"; reqId: ReqId; salt: string; secret: string; wrapped: string }
  /**
   * Replaces this connection's watch list: the users whose presence it is told of (`presence`
   * notices), answered with their status now (`presence_list`). A name without an account is
   * simply offline. Duplicates are dropped; at most {@link MAX_WATCH} names.
   */
  | { v: 1; type: "watch"; reqId: ReqId; usernames: string[] }
  | { v: 1; type: "heartbeat" }
  | { v: 1; type: "signal"; to: string; data: SignalData }
  | { v: 1; type: "relay"; to: string; payload: string }
  | { v: 1; type: "ping"; reqId: ReqId }
  | { v: 1; type: "mail_send"; reqId: ReqId; to: string; messages: OutgoingMail[] }
  /** `after`: the id of the last message of the previous page, to read the next one. */
  | { v: 1; type: "mail_fetch"; reqId: ReqId; after?: string }
  | { v: 1; type: "get_keys"; reqId: ReqId; username: string }
  /** Asks for this session's ICE servers (STUN, and TURN with fresh time-limited credentials). */
  | { v: 1; type: "ice_servers"; reqId: ReqId }
  | { v: 1; type: "mail_ack"; reqId: ReqId; messages: MailReceipt[] }
  /** Asks for a fresh challenge to sign in a {@link HandoverClaim} (deferred hand-over). */
  | { v: 1; type: "handover_challenge"; reqId: ReqId }
  | HandoverClaim
  /**
   * Ends this connection's session: its token is refused from then on, and the user's next login
   * is told the device signed out (`handover: "signed_out"`), not that it owes a hand-over.
   */
  | { v: 1; type: "logout"; reqId: ReqId };

/**
 * A device whose session was replaced while it was offline claims the right to hand its history
 * over (a deferred hand-over, DESIGN §4): its old session's `token` (superseded, possibly
 * expired) and the user's RSA-PSS signature over the server's `challenge`
 * (`shared/crypto/handover_claim.ts`). `claim` is the version of the signed statement.
 */
export interface HandoverClaim {
  v: 1;
  type: "handover_claim";
  reqId: ReqId;
  claim: 1;
  token: string;
  challenge: string;
  signature: string;
}

/** What a `session` frame says of the user's previous session at a login. */
export type PreviousSession =
  /** It was offline: its history stays on that device until it is next online. */
  | "deferred"
  /** It signed out: its history stays on that device, which owes no hand-over. */
  | "signed_out";

/** A message for an offline recipient: the encrypted envelope, opaque to servers. */
export interface OutgoingMail {
  id: string;
  sentAt: number;
  envelope: string;
}

/** A message waiting in the user's mailbox. */
export interface IncomingMail extends OutgoingMail {
  from: string;
}

/** Which received message to acknowledge, and who sent it (to tell them it was delivered). */
export interface MailReceipt {
  id: string;
  from: string;
}

/** Most messages in one `mail_send` or `mail_ack` frame. */
export const MAX_MAIL_BATCH = 500;
/** Largest envelope of one mailbox message, in characters. */
export const MAX_ENVELOPE = 16 * 1024;
/**
 * Most characters of envelopes in one `mail` page: with the per-message fields it stays well
 * under the 4 MiB a client accepts in one frame, whatever the mailbox holds.
 */
export const MAX_MAIL_PAGE_CHARS = 2 * 1024 * 1024;

/** An opaque WebRTC signaling object as produced by the peer library (offer, answer, candidate). */
export type SignalData = Record<string, unknown>;

/**
 * One entry of `RTCConfiguration.iceServers`: STUN URLs, or TURN URLs with the time-limited
 * credentials of the TURN REST convention (username `expiry:user`, credential an HMAC of it).
 */
export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

/** Most ICE server entries, and most URLs in one, a server may announce. */
export const MAX_ICE_SERVERS = 8;

/** An ICE server URL (RFC 7064 / 7065): `stun:`, `stuns:`, `turn:` or `turns:`, host, port, query. */
export const ICE_URL_PATTERN = /^(stuns?|turns?):[A-Za-z0-9.\-\[\]:]+(\?transport=(udp|tcp))?$/;

/** Most names in one `watch` list. */
export const MAX_WATCH = 1000;

/** A watched user and whether they are online. */
export interface ContactEntry {
  username: string;
  online: boolean;
}

/** Server → client frames. */
export type ServerFrame =
  | { v: 1; type: "ok"; reqId: ReqId }
  | { v: 1; type: "error"; reqId?: ReqId; code: ErrorCode; path?: string; message: string }
  | {
    v: 1;
    type: "session";
    reqId: ReqId;
    username: string;
    token: string;
    expiresAt: number;
    servers: string[];
    /**
     * At a password login only: the user's own keys, so a new device can unwrap its private
     * keys. A `resume` never carries them (the device keeps its unlocked keys).
     */
    keys?: AccountKeys;
    /** The user's public keys, at login and resume: the device checks the keys it kept. */
    publicKeys?: PublicKeys;
    /** Exchanged for the next token pair with `refresh` before `expiresAt` (login and refresh). */
    refreshToken?: string;
    /** At a login: the previous session's device is offline, its hand-over is deferred. */
    handover?: PreviousSession;
    /** At a login of a legacy account (salt derived from its name): send `rekey` now. */
    rekey?: true;
  }
  /** The salt to derive `username`'s login secret with (served for any name). */
  | { v: 1; type: "login_params"; reqId: ReqId; username: string; salt: string }
  /** The status of each name of a `watch` list, in its order (without duplicates). */
  | { v: 1; type: "presence_list"; reqId: ReqId; users: ContactEntry[] }
  /**
   * The ICE servers for this session's data channels; TURN credentials in them are valid until
   * `expiresAt` (ms since the epoch; 0 when there are none), so the client asks again before.
   */
  | { v: 1; type: "ice_servers"; reqId: ReqId; iceServers: IceServer[]; expiresAt: number }
  /** A fresh single-use challenge for a `handover_claim` on this connection. */
  | { v: 1; type: "handover_challenge"; reqId: ReqId; challenge: string }
  /**
   * The claim holds: the connection is in a hand-over grace of `handoverMs` (as after
   * `superseded` with `handoverMs`), signaling only with the user's current session.
   */
  | { v: 1; type: "handover_admitted"; reqId: ReqId; handoverMs: number }
  | { v: 1; type: "presence"; username: string; online: boolean }
  | { v: 1; type: "signal"; from: string; data: SignalData }
  | { v: 1; type: "relay"; from: string; payload: string }
  | { v: 1; type: "pong"; reqId: ReqId }
  /** One page of the mailbox; `more` when messages follow the last one (fetch `after` it). */
  | { v: 1; type: "mail"; reqId: ReqId; messages: IncomingMail[]; more?: boolean }
  | { v: 1; type: "keys"; reqId: ReqId; username: string; encryption: string; signing: string }
  | { v: 1; type: "delivered"; by: string; ids: string[] }
  /**
   * Mail was stored for this user while their session runs (a sender believed them offline):
   * fetch the mailbox.
   */
  | { v: 1; type: "mail_waiting" }
  /**
   * This session was replaced by a newer login of the same user (one active session per user).
   * Without `handoverMs` the server closes the socket right after, with close code
   * {@link SUPERSEDED_CLOSE_CODE}. With it, the connection stays open that many milliseconds
   * (the hand-over grace, DESIGN §4) for one purpose only: signals to the user's own username,
   * which reach the new session, so the old device can hand its history over a data channel;
   * then the server closes it with the same code.
   */
  | { v: 1; type: "superseded"; message: string; handoverMs?: number }
  /**
   * Cluster-internal (inside a cluster `deliver` to the user, consumed by the receiving server,
   * never sent to or accepted from browsers): the user has a new session, so older ones are
   * superseded.
   */
  | { v: 1; type: "session_started"; sessionId: string; issuedAt: number }
  /** Cluster-internal, like `session_started`: the user's session signed out (a `logout`). */
  | { v: 1; type: "session_ended"; sessionId: string; issuedAt: number }
  /**
   * Cluster-internal: a WebRTC signal from a user to himself during a hand-over. `toward` says
   * which connection it is for — the `current` session (sent by a superseded connection in its
   * grace) or the `handover` connections superseded by session `current` (sent by that session).
   * The receiving server hands it over as a plain `signal{from: user}`.
   */
  | {
    v: 1;
    type: "handover_signal";
    toward: HandoverDirection;
    current: string;
    data: SignalData;
  };

/** Which side of a hand-over a self-addressed signal is for. */
export type HandoverDirection = "current" | "handover";

/** Longest hand-over grace a server may announce in `superseded.handoverMs`, in ms. */
export const MAX_HANDOVER_MS = 10 * 60_000;

/**
 * Prefix of signal-data keys reserved for the servers: a browser's signal carrying one is refused
 * with `bad_frame`, so no browser can pass for a server's marker.
 */
export const RESERVED_SIGNAL_KEY_PREFIX = "p2pchat:";

/** WebSocket close code of a session replaced by a newer login: the client must not reconnect. */
export const SUPERSEDED_CLOSE_CODE = 4001;
/** WebSocket close code of a connection closed for sustained abuse (frame flood). */
export const ABUSE_CLOSE_CODE = 4008;

/** Every frame type a browser may send. */
export const CLIENT_TYPES = [
  "register",
  "login_params",
  "login",
  "resume",
  "refresh",
  "rekey",
  "watch",
  "heartbeat",
  "signal",
  "relay",
  "ping",
  "mail_send",
  "mail_fetch",
  "mail_ack",
  "get_keys",
  "ice_servers",
  "handover_challenge",
  "handover_claim",
  "logout",
] as const;

const SERVER_TYPES = [
  "ok",
  "error",
  "session",
  "login_params",
  "presence_list",
  "presence",
  "signal",
  "relay",
  "pong",
  "mail",
  "delivered",
  "mail_waiting",
  "keys",
  "superseded",
  "session_started",
  "session_ended",
  "handover_signal",
  "handover_challenge",
  "handover_admitted",
  "ice_servers",
] as const;

const ERROR_CODES: readonly ErrorCode[] = [
  "bad_json",
  "bad_frame",
  "frame_too_large",
  "unsupported_version",
  "unknown_type",
  "invalid_username",
  "invalid_secret",
  "username_taken",
  "wrong_credentials",
  "not_authenticated",
  "session_expired",
  "peer_offline",
  "unavailable",
  "rate_limited",
  "internal",
  "unknown_user",
  "mailbox_full",
  "quota_exceeded",
  "not_superseded",
  "keys_required",
  "unknown_account",
];

const SESSION_ID_RULE = { min: 1, max: 64 };
const TOKEN_RULE = { min: 16, max: 512, pattern: /^[A-Za-z0-9_.-]+$/ };
const ANY_USER = { min: 1, max: 64 };
/** A hand-over challenge: 32 random bytes, base64url. */
export const CHALLENGE_RULE = { min: 43, max: 43, pattern: /^[A-Za-z0-9_-]{43}$/ };
/** An RSA-PSS signature (up to 4096-bit keys), base64url. */
const SIGNATURE_RULE = { min: 16, max: 700, pattern: /^[A-Za-z0-9_-]+$/ };

function readReqId(obj: Record<string, unknown>): number {
  return readNumber(obj, "reqId", "", { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true });
}

/** Reads a username, reporting the product's rule (not a regex) when it is malformed. */
export function readUsername(obj: Record<string, unknown>, key: string, path = ""): string {
  return checkUsername(obj[key], path ? `${path}.${key}` : key);
}

/** Checks a bare value (e.g. an array item at path `at`) against the username rule. */
export function checkUsername(value: unknown, at: string): string {
  if (typeof value !== "string" || !USERNAME_PATTERN.test(value)) {
    throw new ProtocolError("invalid_username", at, USERNAME_RULE);
  }
  return value;
}

function readSecret(obj: Record<string, unknown>): string {
  const value = obj.secret;
  if (typeof value !== "string" || value.length < 8 || value.length > 256) {
    throw new ProtocolError("invalid_secret", "secret", SECRET_RULE);
  }
  return value;
}

/** The first reserved key (see {@link RESERVED_SIGNAL_KEY_PREFIX}) of signal data, if any. */
export function reservedSignalKey(data: SignalData): string | undefined {
  return Object.keys(data).find((k) => k.startsWith(RESERVED_SIGNAL_KEY_PREFIX));
}

/** Reads a signaling object: any JSON object whose serialization stays under the size limit. */
export function readSignal(obj: Record<string, unknown>, key: string): SignalData {
  const data = readObject(obj[key], key);
  if (JSON.stringify(data).length > MAX_SIGNAL_BYTES) {
    throw new ProtocolError(
      "frame_too_large",
      key,
      `Signal larger than ${MAX_SIGNAL_BYTES} bytes`,
    );
  }
  return data;
}

/** Validates an already-decoded client frame. */
export function validateClientFrame(value: unknown): ClientFrame {
  const { obj, type } = readEnvelope(value, PROTOCOL_VERSION, CLIENT_TYPES);
  switch (type as ClientFrame["type"]) {
    case "register": {
      const reqId = readReqId(obj);
      const username = readUsername(obj, "username");
      const secret = readSecret(obj);
      if (obj.keys === undefined) {
        throw new ProtocolError(
          "keys_required",
          "keys",
          "An account needs keys: register with your public keys and wrapped private keys",
        );
      }
      const keys = readAccountKeys(obj.keys, "keys");
      const salt = readString(obj, "salt", "", NEW_SALT_RULE);
      return { v: 1, type: "register", reqId, username, secret, salt, keys };
    }
    case "login":
      return {
        v: 1,
        type: "login",
        reqId: readReqId(obj),
        username: readUsername(obj, "username"),
        secret: readSecret(obj),
      };
    case "login_params":
      return {
        v: 1,
        type: "login_params",
        reqId: readReqId(obj),
        username: readUsername(obj, "username"),
      };
    case "refresh":
      return {
        v: 1,
        type: "refresh",
        reqId: readReqId(obj),
        refreshToken: readString(obj, "refreshToken", "", TOKEN_RULE),
      };
    case "rekey":
      return {
        v: 1,
        type: "rekey",
        reqId: readReqId(obj),
        salt: readString(obj, "salt", "", NEW_SALT_RULE),
        secret: readSecret(obj),
        wrapped: readString(obj, "wrapped", "", WRAPPED_RULE),
      };
    case "resume":
      return {
        v: 1,
        type: "resume",
        reqId: readReqId(obj),
        token: readString(obj, "token", "", TOKEN_RULE),
      };
    case "watch": {
      const usernames = readArray(obj, "usernames", "", MAX_WATCH, checkUsername);
      return { v: 1, type: "watch", reqId: readReqId(obj), usernames: [...new Set(usernames)] };
    }
    case "ice_servers":
      return { v: 1, type: "ice_servers", reqId: readReqId(obj) };
    case "heartbeat":
      return { v: 1, type: "heartbeat" };
    case "signal":
      return { v: 1, type: "signal", to: readUsername(obj, "to"), data: readSignal(obj, "data") };
    case "relay":
      return {
        v: 1,
        type: "relay",
        to: readUsername(obj, "to"),
        payload: readString(obj, "payload", "", { max: MAX_RELAY_PAYLOAD }),
      };
    case "ping":
      return { v: 1, type: "ping", reqId: readReqId(obj) };
    case "mail_send":
      return {
        v: 1,
        type: "mail_send",
        reqId: readReqId(obj),
        to: readUsername(obj, "to"),
        messages: readArray(obj, "messages", "", MAX_MAIL_BATCH, readOutgoingMail),
      };
    case "mail_fetch":
      return {
        v: 1,
        type: "mail_fetch",
        reqId: readReqId(obj),
        ...(obj.after === undefined ? {} : { after: readString(obj, "after", "", MAIL_ID_RULE) }),
      };
    case "get_keys":
      return {
        v: 1,
        type: "get_keys",
        reqId: readReqId(obj),
        username: readUsername(obj, "username"),
      };
    case "mail_ack":
      return {
        v: 1,
        type: "mail_ack",
        reqId: readReqId(obj),
        messages: readArray(obj, "messages", "", MAX_MAIL_BATCH, readReceipt),
      };
    case "handover_challenge":
    case "logout":
      return { v: 1, type: type as "handover_challenge" | "logout", reqId: readReqId(obj) };
    case "handover_claim": {
      if (obj.claim !== 1) {
        throw new ProtocolError(
          "unsupported_version",
          "claim",
          "Unsupported hand-over claim version: this server understands claim 1",
        );
      }
      return {
        v: 1,
        type: "handover_claim",
        reqId: readReqId(obj),
        claim: 1,
        token: readString(obj, "token", "", TOKEN_RULE),
        challenge: readString(obj, "challenge", "", CHALLENGE_RULE),
        signature: readString(obj, "signature", "", SIGNATURE_RULE),
      };
    }
  }
}

const PUBLIC_KEY_RULE = { min: 100, max: 2048, pattern: /^[A-Za-z0-9_-]+$/ };
/** A new salt: 16 random bytes, base64url. */
const NEW_SALT_RULE = { min: 22, max: 22, pattern: /^[A-Za-z0-9_-]{22}$/ };
/** The opaque password-wrapped private keys. */
export const WRAPPED_RULE = { min: 16, max: 16 * 1024 };

function readPublicKeys(value: unknown, path: string): PublicKeys {
  const o = readObject(value, path);
  return {
    encryption: readString(o, "encryption", path, PUBLIC_KEY_RULE),
    signing: readString(o, "signing", path, PUBLIC_KEY_RULE),
  };
}

/** Reads a user's keys: two public keys and the opaque wrapped private keys. */
export function readAccountKeys(value: unknown, path: string): AccountKeys {
  const o = readObject(value, path);
  return {
    encryption: readString(o, "encryption", path, PUBLIC_KEY_RULE),
    signing: readString(o, "signing", path, PUBLIC_KEY_RULE),
    wrapped: readString(o, "wrapped", path, WRAPPED_RULE),
  };
}

const MAIL_ID_RULE = { min: 8, max: 64, pattern: /^[A-Za-z0-9_-]{8,64}$/ };

function readOutgoingMail(value: unknown, path: string): OutgoingMail {
  const o = readObject(value, path);
  return {
    id: readString(o, "id", path, MAIL_ID_RULE),
    sentAt: readNumber(o, "sentAt", path, { min: 0, max: 8.64e15, integer: true }),
    envelope: readString(o, "envelope", path, { min: 1, max: MAX_ENVELOPE }),
  };
}

function readReceipt(value: unknown, path: string): MailReceipt {
  const o = readObject(value, path);
  return { id: readString(o, "id", path, MAIL_ID_RULE), from: readUsername(o, "from", path) };
}

function readIncomingMail(value: unknown, path: string): IncomingMail {
  return {
    ...readOutgoingMail(value, path),
    from: readUsername(readObject(value, path), "from", path),
  };
}

/** Decodes and validates one WebSocket frame from a browser. Throws {@link ProtocolError}. */
export function parseClientFrame(text: unknown): ClientFrame {
  return validateClientFrame(parseJsonFrame(text, MAX_FRAME_BYTES));
}

function readContact(value: unknown, path: string): ContactEntry {
  const obj = readObject(value, path);
  return {
    username: readString(obj, "username", path, ANY_USER),
    online: readBoolean(obj, "online", path),
  };
}

/** Validates an already-decoded server frame (used by the client and by server-to-server relay). */
export function validateServerFrame(value: unknown): ServerFrame {
  const { obj, type } = readEnvelope(value, PROTOCOL_VERSION, SERVER_TYPES);
  switch (type as ServerFrame["type"]) {
    case "ok":
      return { v: 1, type: "ok", reqId: readReqId(obj) };
    case "error": {
      const code = obj.code;
      if (typeof code !== "string" || !ERROR_CODES.includes(code as ErrorCode)) {
        throw new ProtocolError("bad_frame", "code", "Unknown error code");
      }
      const frame: ServerFrame = {
        v: 1,
        type: "error",
        code: code as ErrorCode,
        message: readString(obj, "message", "", { max: 1000 }),
      };
      if (obj.reqId !== undefined) frame.reqId = readReqId(obj);
      if (obj.path !== undefined) frame.path = readString(obj, "path", "", { max: 200 });
      return frame;
    }
    case "session":
      return {
        v: 1,
        type: "session",
        reqId: readReqId(obj),
        username: readString(obj, "username", "", ANY_USER),
        token: readString(obj, "token", "", TOKEN_RULE),
        expiresAt: readNumber(obj, "expiresAt", "", { min: 0, max: Number.MAX_SAFE_INTEGER }),
        servers: readArray(
          obj,
          "servers",
          "",
          64,
          (v, p) => checkString(v, p, { min: 1, max: 300 }),
        ),
        ...(obj.keys === undefined ? {} : { keys: readAccountKeys(obj.keys, "keys") }),
        ...(obj.publicKeys === undefined
          ? {}
          : { publicKeys: readPublicKeys(obj.publicKeys, "publicKeys") }),
        ...(obj.refreshToken === undefined
          ? {}
          : { refreshToken: readString(obj, "refreshToken", "", TOKEN_RULE) }),
        ...(obj.handover === undefined ? {} : { handover: readPrevious(obj.handover) }),
        ...(obj.rekey === true ? { rekey: true as const } : {}),
      };
    case "login_params":
      return {
        v: 1,
        type: "login_params",
        reqId: readReqId(obj),
        username: readString(obj, "username", "", ANY_USER),
        salt: readString(obj, "salt", "", SALT_RULE),
      };
    case "handover_challenge":
      return {
        v: 1,
        type: "handover_challenge",
        reqId: readReqId(obj),
        challenge: readString(obj, "challenge", "", CHALLENGE_RULE),
      };
    case "handover_admitted":
      return {
        v: 1,
        type: "handover_admitted",
        reqId: readReqId(obj),
        handoverMs: readNumber(obj, "handoverMs", "", {
          min: 0,
          max: MAX_HANDOVER_MS,
          integer: true,
        }),
      };
    case "presence_list":
      return {
        v: 1,
        type: "presence_list",
        reqId: readReqId(obj),
        users: readArray(obj, "users", "", MAX_WATCH, readContact),
      };
    case "ice_servers":
      return {
        v: 1,
        type: "ice_servers",
        reqId: readReqId(obj),
        iceServers: readArray(obj, "iceServers", "", MAX_ICE_SERVERS, readIceServer),
        expiresAt: readNumber(obj, "expiresAt", "", { min: 0, max: 8.64e15, integer: true }),
      };
    case "presence":
      return {
        v: 1,
        type: "presence",
        username: readString(obj, "username", "", ANY_USER),
        online: readBoolean(obj, "online", ""),
      };
    case "signal":
      return {
        v: 1,
        type: "signal",
        from: readString(obj, "from", "", ANY_USER),
        data: readSignal(obj, "data"),
      };
    case "relay":
      return {
        v: 1,
        type: "relay",
        from: readString(obj, "from", "", ANY_USER),
        payload: readString(obj, "payload", "", { max: MAX_RELAY_PAYLOAD }),
      };
    case "pong":
      return { v: 1, type: "pong", reqId: readReqId(obj) };
    case "mail":
      return {
        v: 1,
        type: "mail",
        reqId: readReqId(obj),
        messages: readArray(obj, "messages", "", 1_000_000, readIncomingMail),
        ...(obj.more === undefined ? {} : { more: readBoolean(obj, "more", "") }),
      };
    case "keys":
      return {
        v: 1,
        type: "keys",
        reqId: readReqId(obj),
        username: readString(obj, "username", "", ANY_USER),
        encryption: readString(obj, "encryption", "", PUBLIC_KEY_RULE),
        signing: readString(obj, "signing", "", PUBLIC_KEY_RULE),
      };
    case "delivered":
      return {
        v: 1,
        type: "delivered",
        by: readString(obj, "by", "", ANY_USER),
        ids: readArray(obj, "ids", "", 100_000, (v, p) => checkString(v, p, MAIL_ID_RULE)),
      };
    case "mail_waiting":
      return { v: 1, type: "mail_waiting" };
    case "superseded": {
      const frame: ServerFrame = {
        v: 1,
        type: "superseded",
        message: readString(obj, "message", "", { max: 1000 }),
      };
      if (obj.handoverMs !== undefined) {
        frame.handoverMs = readNumber(obj, "handoverMs", "", {
          min: 0,
          max: MAX_HANDOVER_MS,
          integer: true,
        });
      }
      return frame;
    }
    case "session_started":
    case "session_ended":
      return {
        v: 1,
        type: type as "session_started" | "session_ended",
        sessionId: readString(obj, "sessionId", "", SESSION_ID_RULE),
        issuedAt: readNumber(obj, "issuedAt", "", { min: 0, max: 8.64e15, integer: true }),
      };
    case "handover_signal": {
      const toward = obj.toward;
      if (toward !== "current" && toward !== "handover") {
        throw new ProtocolError("bad_frame", "toward", 'toward must be "current" or "handover"');
      }
      return {
        v: 1,
        type: "handover_signal",
        toward,
        current: readString(obj, "current", "", SESSION_ID_RULE),
        data: readSignal(obj, "data"),
      };
    }
  }
}

function readIceServer(value: unknown, path: string): IceServer {
  const obj = readObject(value, path);
  const server: IceServer = {
    urls: readArray(
      obj,
      "urls",
      path,
      MAX_ICE_SERVERS,
      (v, p) => checkString(v, p, { min: 6, max: 300, pattern: ICE_URL_PATTERN }),
    ),
  };
  if (obj.username !== undefined) {
    server.username = readString(obj, "username", path, { min: 1, max: 300 });
  }
  if (obj.credential !== undefined) {
    server.credential = readString(obj, "credential", path, { min: 1, max: 300 });
  }
  return server;
}

function readPrevious(value: unknown): PreviousSession {
  if (value !== "deferred" && value !== "signed_out") {
    throw new ProtocolError("bad_frame", "handover", 'handover must be "deferred" or "signed_out"');
  }
  return value;
}

/** Decodes and validates one WebSocket frame from a server. Throws {@link ProtocolError}. */
export function parseServerFrame(text: unknown): ServerFrame {
  return validateServerFrame(parseJsonFrame(text, 4 * 1024 * 1024));
}

/** Builds the error frame a server sends for a rejected input. */
export function errorFrame(err: ProtocolError, reqId?: number): ServerFrame {
  const frame: ServerFrame = { v: 1, type: "error", code: err.code, message: err.message };
  if (reqId !== undefined) frame.reqId = reqId;
  if (err.path) frame.path = err.path;
  return frame;
}
