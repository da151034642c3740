/**
 * What a chat message looks like while it waits in the recipient's mailbox on the servers: the
 * JSON of the encrypted, signed envelope of `shared/crypto/` (DESIGN §4), sealed by the sender's
 * {@link Keyring}. Servers store it but can neither read nor alter it unnoticed. Only when the
 * sender's or the recipient's account has no keys (accounts made before keys existed) is it the
 * JSON of the plaintext peer-protocol chat message, which the recipient accepts only from such
 * an account.
 */
import { type ChatMessage, parseMailboxContent } from "../shared/mod.ts";
import type { Keyring } from "./keyring.ts";

/** Turns a chat message into the opaque envelope handed to the servers (`mail_send`). */
export async function sealForMailbox(message: ChatMessage, keyring: Keyring): Promise<string> {
  const envelope = await keyring.seal(message);
  return JSON.stringify(envelope ?? message);
}

/**
 * Opens an envelope fetched from the mailbox (`mail`), where the servers say it came from `from`
 * and it is addressed to `me`: parses it, verifies the sender's signature and decrypts. Throws
 * `TamperedEnvelopeError` when the signature or content does not verify, and a ProtocolError or
 * an Error when it is malformed, not a chat message, claims another sender or recipient than
 * the servers' record, or is plaintext from an account that has keys.
 */
export async function openFromMailbox(
  envelope: string,
  from: string,
  me: string,
  keyring: Keyring,
): Promise<ChatMessage> {
  const parsed = parseMailboxContent(envelope);
  if (parsed.type === "sealed") {
    if (parsed.envelope.to !== me) {
      throw new Error(`Mailbox entry from "${from}" is addressed to ${parsed.envelope.to}`);
    }
    return await keyring.open(parsed.envelope, from);
  }
  const msg = parsed;
  if (msg.from !== from || msg.to !== me) {
    throw new Error(`Mailbox entry from "${from}" claims ${msg.from} → ${msg.to}`);
  }
  if (!(await keyring.allowsPlaintext(from))) {
    throw new Error(`Unencrypted mailbox entry from "${from}", whose account has keys: rejected`);
  }
  console.warn(`Accepted an unencrypted message from "${from}" (an account without keys)`);
  return msg;
}
