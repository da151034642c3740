/**
 * Which keys of each contact this user trusts (DESIGN §4, "keys are pinned on first use"), as
 * pure functions over a {@link PinRecord}; the keyring applies them to what the directory
 * (`get_keys`) answers and keeps the records in the key store (IndexedDB), and the history
 * hand-over carries them to the user's next device.
 *
 * - The first keys seen of a contact are pinned. A directory answer that differs from the pin —
 *   other keys, or "no keys" for a pinned contact — is a *pending change*: nothing is sealed for
 *   that contact until the user compares the safety number and accepts the new keys; messages
 *   from the contact are still verified only with the pinned key.
 * - A directory that answers the pinned keys again ends the pending change (sealing for the
 *   pinned key is what was trusted all along); the change stays in the record's events, which
 *   the chat shows as markers where they happened.
 * - A contact with no pin and no keys in the directory cannot be written to at all.
 *
 * Keys are compared by their *key id*: SHA-256 over both SPKI encodings. The safety number of two
 * users is derived from both names and key ids, sorted, so both sides compute the same digits.
 */
import { lengthPrefixed, toBase64Url } from "../shared/crypto/mod.ts";
import {
  isValidUsername,
  ProtocolError,
  readArray,
  readNumber,
  readObject,
  readString,
} from "../shared/mod.ts";

/** A user's public keys, as the directory hands them out (SPKI base64url). */
export interface PublicKeys {
  encryption: string;
  signing: string;
}

/** Something that happened to a contact's keys, shown in the chat where it happened. */
export interface TrustEvent {
  /** When this device (or the one that handed it over) saw it, ms since the epoch. */
  at: number;
  /**
   * `changed`: the directory answered other keys; `missing`: it answered "no keys" for a pinned
   * contact; `accepted`: the user accepted new keys after comparing; `restored`: the directory
   * answered the pinned keys again.
   */
  kind: "changed" | "missing" | "accepted" | "restored";
}

/** A directory answer that differs from the pinned keys and that the user has not accepted. */
export interface PendingChange {
  /** Key id of the keys answered, or null when the directory answered "no keys". */
  keyId: string | null;
  /** Those keys, when this device saw them itself (a hand-over carries only the id). */
  keys: PublicKeys | null;
  /** When it was first seen. */
  seenAt: number;
}

/** The keys of one contact this user trusts. */
export interface PinRecord {
  contact: string;
  /** Key id of the pinned keys. */
  keyId: string;
  /** The pinned keys, once this device has seen them (a hand-over carries only the id). */
  keys: PublicKeys | null;
  /** When they were pinned or accepted. */
  pinnedAt: number;
  pending: PendingChange | null;
  /** The last {@link MAX_EVENTS} events, oldest first. */
  events: TrustEvent[];
}

/** Events kept per contact. */
export const MAX_EVENTS = 20;

/** How a contact's keys stand for sending. */
export type TrustStatus =
  /** Pinned keys, as the directory answers them: messages are sealed for them. */
  | "trusted"
  /** The directory answers something else than the pin: sending is blocked until accepted. */
  | "changed"
  /** Never pinned and the directory has no keys: cannot be written to. */
  | "no_keys";

const KEY_ID_DOMAIN = "p2p-chat key id v1";
const SAFETY_DOMAIN = "p2p-chat safety number v1";

/** The key id of `keys`: SHA-256 over both SPKI encodings, base64url. */
export async function keyIdOf(keys: PublicKeys): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    lengthPrefixed([KEY_ID_DOMAIN, keys.encryption, keys.signing]),
  );
  return toBase64Url(digest);
}

function withEvent(events: TrustEvent[], event: TrustEvent): TrustEvent[] {
  return [...events, event].slice(-MAX_EVENTS);
}

/** The status for sending of a contact with record `pin` (null: none). */
export function trustStatus(pin: PinRecord | null): TrustStatus {
  if (!pin) return "no_keys";
  return pin.pending ? "changed" : "trusted";
}

/**
 * Applies a directory answer for `contact` (its keys and key id, or null for "no keys") to the
 * record `pin`: pins on first use, records a change, or ends a change the directory took back.
 * Returns the record to keep (null: nothing to keep) and whether it differs from `pin`.
 */
export function observeDirectory(
  pin: PinRecord | null,
  contact: string,
  answer: { keys: PublicKeys; keyId: string } | null,
  now: number,
): { pin: PinRecord | null; isUpdated: boolean } {
  if (!pin) {
    if (!answer) return { pin: null, isUpdated: false };
    return {
      pin: { contact, ...answer, pinnedAt: now, pending: null, events: [] },
      isUpdated: true,
    };
  }
  if (answer && answer.keyId === pin.keyId) {
    // The pinned keys: fill them in if only their id was known; a pending change ends.
    if (!pin.pending && pin.keys) return { pin, isUpdated: false };
    return {
      pin: {
        ...pin,
        keys: pin.keys ?? answer.keys,
        pending: null,
        events: pin.pending ? withEvent(pin.events, { at: now, kind: "restored" }) : pin.events,
      },
      isUpdated: true,
    };
  }
  const keyId = answer?.keyId ?? null;
  if (pin.pending && pin.pending.keyId === keyId) {
    if (pin.pending.keys || !answer) return { pin, isUpdated: false };
    return { pin: { ...pin, pending: { ...pin.pending, keys: answer.keys } }, isUpdated: true };
  }
  return {
    pin: {
      ...pin,
      pending: { keyId, keys: answer?.keys ?? null, seenAt: now },
      events: withEvent(pin.events, { at: now, kind: answer ? "changed" : "missing" }),
    },
    isUpdated: true,
  };
}

/** Thrown when the user accepts keys that are not the ones pending (the directory moved on). */
export class StaleAcceptError extends Error {
  override name = "StaleAcceptError";
}

/**
 * The user compared the safety number of the pending keys `keyId` and accepts them: they become
 * the pin. Throws {@link StaleAcceptError} unless exactly those keys are pending and known.
 */
export function acceptPending(pin: PinRecord, keyId: string, now: number): PinRecord {
  const p = pin.pending;
  if (!p || p.keyId !== keyId || !p.keys) {
    throw new StaleAcceptError(
      `Cannot accept the keys of ${pin.contact}: they changed again meanwhile, compare anew`,
    );
  }
  return {
    contact: pin.contact,
    keyId,
    keys: p.keys,
    pinnedAt: now,
    pending: null,
    events: withEvent(pin.events, { at: now, kind: "accepted" }),
  };
}

/**
 * Merges a record from the user's other device (`incoming`, carried by the hand-over) into this
 * device's (`local`): the older pin wins (the other device may have pinned before a server began
 * to lie), keys this device saw but that differ from it become a pending change, a pending change
 * on either side stays pending, and the events of both are kept.
 */
export function mergePins(local: PinRecord | null, incoming: PinRecord): PinRecord {
  if (!local) return incoming;
  const events = mergeEvents(local.events, incoming.events);
  if (local.keyId === incoming.keyId) {
    const pending = local.pending ?? incoming.pending;
    return {
      ...local,
      keys: local.keys ?? incoming.keys,
      pinnedAt: Math.min(local.pinnedAt, incoming.pinnedAt),
      pending,
      events,
    };
  }
  const [older, newer] = incoming.pinnedAt <= local.pinnedAt
    ? [incoming, local]
    : [local, incoming];
  const pending = older.pending ?? {
    keyId: newer.keyId,
    keys: newer.keys,
    seenAt: newer.pinnedAt,
  };
  return {
    ...older,
    pending,
    events: mergeEvents(events, [{ at: newer.pinnedAt, kind: "changed" }]),
  };
}

function mergeEvents(a: TrustEvent[], b: TrustEvent[]): TrustEvent[] {
  const seen = new Set<string>();
  const all: TrustEvent[] = [];
  for (const e of [...a, ...b].sort((x, y) => x.at - y.at)) {
    const key = `${e.at}:${e.kind}`;
    if (seen.has(key)) continue;
    seen.add(key);
    all.push(e);
  }
  return all.slice(-MAX_EVENTS);
}

/** A safety number: digits to read aloud, and the text its QR code holds. */
export interface SafetyNumber {
  /** 30 digits in six groups of five, separated by spaces. */
  digits: string;
  /** What the QR code encodes: the digits, tagged (short, so the code is easy to scan). */
  qrText: string;
}

/**
 * The safety number of users `a` and `b` with key ids `aKeyId` and `bKeyId`: the same whichever
 * side computes it, and different as soon as either side holds another key for either user.
 */
export async function safetyNumber(
  a: string,
  aKeyId: string,
  b: string,
  bKeyId: string,
): Promise<SafetyNumber> {
  const pairs = [[a, aKeyId], [b, bKeyId]].sort((x, y) => x[0]! < y[0]! ? -1 : 1);
  const fields = pairs.flat();
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", lengthPrefixed([SAFETY_DOMAIN, ...fields])),
  );
  const groups: string[] = [];
  for (let g = 0; g < 6; g++) {
    // Five bytes (40 bits) per group of five digits: the bias of the modulo is negligible.
    let n = 0;
    for (let i = 0; i < 5; i++) n = n * 256 + digest[g * 5 + i]!;
    groups.push(String(n % 100_000).padStart(5, "0"));
  }
  return { digits: groups.join(" "), qrText: `p2pchat-safety:1:${groups.join("")}` };
}

// --- the hand-over form ---------------------------------------------------------------------

/** Largest serialized trust payload a hand-over carries, in characters. */
export const MAX_HANDOVER_TRUST_CHARS = 24_000;

const KEY_ID_RULE = { pattern: /^[A-Za-z0-9_-]{43}$/, max: 43 };
const KINDS: readonly TrustEvent["kind"][] = ["changed", "missing", "accepted", "restored"];

/** A record as the hand-over carries it: ids only (the next device fetches the keys). */
interface CompactPin {
  contact: string;
  keyId: string;
  pinnedAt: number;
  pending?: { keyId: string | null; seenAt: number };
  events?: TrustEvent[];
}

/**
 * The records to hand to the user's next device, as JSON text of at most
 * {@link MAX_HANDOVER_TRUST_CHARS}: records with a pending change or events first, so that if
 * the list must be cut, plain pins (which the next device pins again on first use) go first.
 */
export function handoverTrust(pins: PinRecord[]): string {
  const ordered = [...pins].sort((a, b) =>
    Number(!!b.pending) - Number(!!a.pending) || b.events.length - a.events.length
  );
  const compact: CompactPin[] = ordered.map((p) => ({
    contact: p.contact,
    keyId: p.keyId,
    pinnedAt: p.pinnedAt,
    ...(p.pending ? { pending: { keyId: p.pending.keyId, seenAt: p.pending.seenAt } } : {}),
    ...(p.events.length ? { events: p.events } : {}),
  }));
  let text = JSON.stringify(compact);
  while (text.length > MAX_HANDOVER_TRUST_CHARS && compact.length > 0) {
    compact.splice(Math.floor(compact.length * 0.8));
    text = JSON.stringify(compact);
  }
  return text;
}

/**
 * Parses the trust payload of a hand-over (from this user's own other device, but still
 * checked): records without keys, which the directory's answers fill in. Throws ProtocolError.
 */
export function parseHandoverTrust(value: unknown, owner: string): PinRecord[] {
  return readArray({ trust: value }, "trust", "", 10_000, (v, path) => {
    const o = readObject(v, path);
    const contact = readString(o, "contact", path, { max: 32 });
    if (!isValidUsername(contact) || contact === owner) {
      throw new ProtocolError("invalid_username", `${path}.contact`, "Not a contact's username");
    }
    const time = (obj: Record<string, unknown>, key: string, at: string) =>
      readNumber(obj, key, at, { min: 0, max: 8.64e15, integer: true });
    let pending: PendingChange | null = null;
    if (o.pending !== undefined) {
      const p = readObject(o.pending, `${path}.pending`);
      pending = {
        keyId: p.keyId === null ? null : readString(p, "keyId", `${path}.pending`, KEY_ID_RULE),
        keys: null,
        seenAt: time(p, "seenAt", `${path}.pending`),
      };
    }
    const events = o.events === undefined
      ? []
      : readArray(o, "events", path, MAX_EVENTS, (e, at) => {
        const eo = readObject(e, at);
        const kind = eo.kind as TrustEvent["kind"];
        if (!KINDS.includes(kind)) {
          throw new ProtocolError("bad_frame", `${at}.kind`, "Unknown trust event");
        }
        return { at: time(eo, "at", at), kind };
      });
    return {
      contact,
      keyId: readString(o, "keyId", path, KEY_ID_RULE),
      keys: null,
      pinnedAt: time(o, "pinnedAt", path),
      pending,
      events,
    };
  });
}
