/**
 * The sealed browser-to-browser frame: how an end-to-end encrypted chat message (an
 * {@link Envelope} of `crypto/envelope.ts`, DESIGN §4) travels between two browsers, over a data
 * channel or through the servers' relay, as `{"v":1,"type":"sealed","envelope":{…}}`. Acks and
 * pings travel as the plain {@link PeerMessage}s of `peer_protocol.ts`. A mailbox entry holds the
 * envelope JSON itself. A chat message in clear still parses, so that the client can say what it
 * refused: clients never send one and refuse every one they receive (there is no plaintext path).
 *
 * The parsers take `unknown` and return the typed frame or throw a {@link ProtocolError} naming
 * the bad field; they do not verify signatures or decrypt (the client's keyring does).
 */
import { type Envelope, parseEnvelope } from "./crypto/envelope.ts";
import {
  type ChatMessage,
  PEER_PROTOCOL_VERSION,
  type PeerMessage,
  validatePeerMessage,
} from "./peer_protocol.ts";
import {
  describeValue,
  parseJsonFrame,
  ProtocolError,
  readEnvelope,
  readObject,
} from "./validate.ts";

/** A chat message sealed for its recipient and its sender, signed by the sender. */
export interface SealedFrame {
  v: 1;
  type: "sealed";
  envelope: Envelope;
}

/** What a data channel or the relay carries between two browsers. */
export type LiveFrame = SealedFrame | PeerMessage;

/** What a mailbox entry holds: a sealed chat message (or a message in clear, to be refused). */
export type MailboxContent = SealedFrame | ChatMessage;

/** Largest live frame or mailbox entry, in characters. */
export const MAX_LIVE_FRAME = 64 * 1024;

/** The data-channel/relay text of a sealed message. */
export function sealedFrameText(envelope: Envelope): string {
  const frame: SealedFrame = { v: PEER_PROTOCOL_VERSION, type: "sealed", envelope };
  return JSON.stringify(frame);
}

/**
 * Parses a data-channel or relay text into a sealed frame or a plain peer message.
 *
 * @example
 * ```ts
 * const frame = parseLiveFrame('{"v":1,"type":"ping","seq":1}'); // { v: 1, type: "ping", seq: 1 }
 * ```
 */
export function parseLiveFrame(text: unknown): LiveFrame {
  const value = parseJsonFrame(text, MAX_LIVE_FRAME);
  if (readObject(value, "").type !== "sealed") return validatePeerMessage(value);
  const { obj } = readEnvelope(value, PEER_PROTOCOL_VERSION, ["sealed"]);
  return {
    v: PEER_PROTOCOL_VERSION,
    type: "sealed",
    envelope: envelopeAt(obj.envelope, "envelope"),
  };
}

/**
 * Parses the opaque text of a mailbox entry: the envelope JSON, or a chat message in clear (which
 * the client refuses). Anything else, an ack or a ping say, is rejected.
 */
export function parseMailboxContent(text: unknown): MailboxContent {
  const value = parseJsonFrame(text, MAX_LIVE_FRAME);
  const type = readObject(value, "").type;
  if (type === "chat") return validatePeerMessage(value) as ChatMessage;
  if (type !== undefined) {
    throw new ProtocolError(
      "unknown_type",
      "type",
      `A mailbox entry must be a sealed or a chat message, not ${describeValue(type)}`,
    );
  }
  return { v: PEER_PROTOCOL_VERSION, type: "sealed", envelope: envelopeAt(value, "") };
}

/** Parses an envelope found at `path`, naming the full field path in errors. */
function envelopeAt(value: unknown, path: string): Envelope {
  try {
    return parseEnvelope(value);
  } catch (err) {
    if (!(err instanceof ProtocolError) || !path) throw err;
    const at = err.path ? `${path}.${err.path}` : path;
    throw new ProtocolError(err.code, at, err.message.replace(`"${err.path}"`, `"${at}"`));
  }
}
