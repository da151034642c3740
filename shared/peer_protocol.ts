/**
 * Messages two browsers exchange directly over their WebRTC data channel. The same parser runs
 * on every message received, so a misbehaving peer cannot inject malformed history rows.
 */
import {
  parseJsonFrame,
  ProtocolError,
  readEnvelope,
  readNumber,
  readObject,
  readString,
} from "./validate.ts";
import { readUsername } from "./protocol.ts";
import {
  FILE_FRAME_TYPES,
  type FileFrame,
  type FileMeta,
  validateFileFrame,
  validateFileMeta,
} from "./file_protocol.ts";

/** Version of the browser ↔ browser protocol. */
export const PEER_PROTOCOL_VERSION = 1;
/** Longest chat text, in characters. */
export const MAX_TEXT_LENGTH = 4000;
/** Message ids: 8–64 url-safe characters, globally unique (random). */
export const MESSAGE_ID_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;

/** One chat message as sent over the data channel. */
export interface ChatMessage {
  v: 1;
  type: "chat";
  id: string;
  from: string;
  to: string;
  sentAt: number;
  text: string;
  /** The file this message announces (its id is the message id): `file_protocol.ts`. */
  file?: FileMeta;
}

/** Browser ↔ browser messages. */
export type PeerMessage =
  | ChatMessage
  | { v: 1; type: "ack"; id: string }
  | { v: 1; type: "ping"; seq: number }
  | { v: 1; type: "pong"; seq: number }
  /** The sender is typing (`active`), or stopped; sent only over the data channel. */
  | { v: 1; type: "typing"; active: boolean }
  /**
   * Read receipt: the sender has seen every message of the receiver's with a send time up to
   * `upTo` (the receiver's own clock, as it put in its messages).
   */
  | { v: 1; type: "read"; upTo: number }
  /** A file's chunks and their bookkeeping (`file_protocol.ts`). */
  | FileFrame;

const PEER_TYPES = ["chat", "ack", "ping", "pong", "typing", "read", ...FILE_FRAME_TYPES] as const;
const ID_RULE = { pattern: MESSAGE_ID_PATTERN, max: 64 };
const SEQ_RULE = { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true };

/** Validates an already-decoded peer message. Throws a ProtocolError on bad input. */
export function validatePeerMessage(value: unknown): PeerMessage {
  const { obj, type } = readEnvelope(value, PEER_PROTOCOL_VERSION, PEER_TYPES);
  switch (type as PeerMessage["type"]) {
    case "chat": {
      const chat: ChatMessage = {
        v: 1,
        type: "chat",
        id: readString(obj, "id", "", ID_RULE),
        from: readUsername(obj, "from"),
        to: readUsername(obj, "to"),
        sentAt: readNumber(obj, "sentAt", "", { min: 0, max: 8.64e15, integer: true }),
        text: readString(obj, "text", "", { min: 1, max: MAX_TEXT_LENGTH }),
      };
      if (obj.file !== undefined) chat.file = validateFileMeta(obj.file);
      return chat;
    }
    case "ack":
      return { v: 1, type: "ack", id: readString(obj, "id", "", ID_RULE) };
    case "ping":
    case "pong":
      return { v: 1, type: type as "ping" | "pong", seq: readNumber(obj, "seq", "", SEQ_RULE) };
    case "typing":
      if (typeof obj.active !== "boolean") {
        throw new ProtocolError("bad_frame", "active", "active must be true or false");
      }
      return { v: 1, type: "typing", active: obj.active };
    case "read":
      return {
        v: 1,
        type: "read",
        upTo: readNumber(obj, "upTo", "", { min: 0, max: 8.64e15, integer: true }),
      };
    case "file_chunk":
    case "file_have":
    case "file_cancel":
      return validateFileFrame(obj, type);
  }
}

/** Decodes and validates one data-channel message. */
export function parsePeerMessage(text: unknown): PeerMessage {
  return validatePeerMessage(parseJsonFrame(text, 64 * 1024));
}

/** A new random message id (128 bits, url-safe base64). */
export function newMessageId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replaceAll("=", "");
}

/**
 * Messages of a history hand-over channel: the data channel a superseded device opens to the
 * user's new device (its own username) to hand its history over (DESIGN §4). The receiver opens
 * with `handover_hello` (its nonce for this transfer); the sender answers with compressed, sealed
 * batches (`shared/crypto/handover_batch.ts`), newest rows first, a few in flight at once, each
 * acknowledged by `handover_received` once its rows are durable (a new channel in the same grace
 * resumes after the last acknowledged batch); after the final batch the receiver sends `handover_done` with its
 * signature over the nonce and the row count, or `handover_rejected` if a batch failed
 * verification. The batch is validated by `parseSealedBatch` (shared/crypto).
 */
export type HandoverMessage =
  /**
   * `after`: the oldest row the receiver stored in an earlier, interrupted transfer from this
   * device (rows go newest first): the sender resumes with the rows after it, and the final
   * acknowledgement is signed over it too ({@link handoverAckNonce}).
   */
  | { v: 1; type: "handover_hello"; nonce: string; after?: HandoverCursor }
  | { v: 1; type: "handover_batch"; batch: unknown }
  | { v: 1; type: "handover_received"; seq: number }
  | { v: 1; type: "handover_done"; rows: number; signature: string }
  | { v: 1; type: "handover_rejected"; reason: string };

/** A place in the newest-first order of a history: the row `(sentAt, id)`. */
export interface HandoverCursor {
  sentAt: number;
  id: string;
}

/** What the final acknowledgement of a transfer signs as its nonce: bound to its cursor. */
export function handoverAckNonce(nonce: string, after?: HandoverCursor): string {
  return after ? `${nonce}:${after.sentAt}:${after.id}` : nonce;
}

const HANDOVER_TYPES = [
  "handover_hello",
  "handover_batch",
  "handover_received",
  "handover_done",
  "handover_rejected",
] as const;

/** Largest hand-over channel message, in characters (a sealed batch stays below it). */
export const MAX_HANDOVER_MESSAGE = 64 * 1024;

/** Decodes and validates one hand-over channel message. Throws a ProtocolError on bad input. */
export function parseHandoverMessage(text: unknown): HandoverMessage {
  const value = parseJsonFrame(text, MAX_HANDOVER_MESSAGE);
  const { obj, type } = readEnvelope(value, PEER_PROTOCOL_VERSION, HANDOVER_TYPES);
  switch (type as HandoverMessage["type"]) {
    case "handover_hello": {
      const hello: HandoverMessage = {
        v: 1,
        type: "handover_hello",
        nonce: readString(obj, "nonce", "", { pattern: /^[A-Za-z0-9_-]{16,64}$/, max: 64 }),
      };
      if (obj.after !== undefined) {
        const after = readObject(obj.after, "after");
        hello.after = {
          sentAt: readNumber(after, "sentAt", "after", { min: 0, max: 8.64e15, integer: true }),
          id: readString(after, "id", "after", { pattern: MESSAGE_ID_PATTERN, max: 64 }),
        };
      }
      return hello;
    }
    case "handover_batch":
      return { v: 1, type: "handover_batch", batch: obj.batch };
    case "handover_received":
      return { v: 1, type: "handover_received", seq: readNumber(obj, "seq", "", SEQ_RULE) };
    case "handover_done":
      return {
        v: 1,
        type: "handover_done",
        rows: readNumber(obj, "rows", "", SEQ_RULE),
        signature: readString(obj, "signature", "", {
          pattern: /^[A-Za-z0-9_-]+$/,
          min: 16,
          max: 683,
        }),
      };
    case "handover_rejected":
      return {
        v: 1,
        type: "handover_rejected",
        reason: readString(obj, "reason", "", { max: 500 }),
      };
  }
}
