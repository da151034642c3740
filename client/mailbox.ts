/**
 * What a chat message looks like while it waits in the recipient's mailbox on the servers.
 *
 * Today the envelope is the JSON of the peer-protocol chat message. A later issue replaces it
 * with the encrypted, signed envelope of `shared/crypto/`: only these two functions change.
 */
import { type ChatMessage, parsePeerMessage } from "../shared/mod.ts";

/** Turns a chat message into the opaque envelope handed to the servers (`mail_send`). */
export function sealForMailbox(message: ChatMessage): string {
  return JSON.stringify(message);
}

/**
 * Opens an envelope fetched from the mailbox (`mail`), where the servers say it came from `from`
 * and it is addressed to `me`. Throws (a ProtocolError or an Error) when it is malformed, not a
 * chat message, or claims another sender or recipient than the servers' record.
 */
export function openFromMailbox(envelope: string, from: string, me: string): ChatMessage {
  const msg = parsePeerMessage(envelope);
  if (msg.type !== "chat") throw new Error(`Mailbox entry is a "${msg.type}", not a chat message`);
  if (msg.from !== from || msg.to !== me) {
    throw new Error(`Mailbox entry from "${from}" claims ${msg.from} → ${msg.to}`);
  }
  return msg;
}
