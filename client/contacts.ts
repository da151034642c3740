/**
 * The user's contact book, kept with the user on this device (IndexedDB, per owner, next to the
 * pinned keys of `trust.ts`): the contacts (whose presence the servers are asked to watch), the
 * message requests (people not in the contacts who wrote; their messages show once opened) and
 * the blocked users (their messages are acknowledged and dropped, their calls refused). There is
 * no directory: a contact is added by exact name, or by a link carrying the name and key id.
 * Everything here is pure: the store is `keyring.ts`'s, the session logic `user_session.ts`'s.
 */
import { isValidUsername, MAX_WATCH, ProtocolError, readArray, readObject } from "../shared/mod.ts";

/** One user's contact book; every list sorted, without duplicates, the three disjoint. */
export interface ContactBook {
  contacts: string[];
  /** Not contacts, not blocked, who sent messages: shown under "Requests". */
  requests: string[];
  blocked: string[];
}

/** An empty book. */
export const EMPTY_BOOK: ContactBook = Object.freeze({ contacts: [], requests: [], blocked: [] });

/** Most contacts a book holds (the servers watch at most this many names). */
export const MAX_CONTACTS = MAX_WATCH;
/** Most requests or blocked users a book keeps (the oldest go first). */
export const MAX_LISTED = 1000;

/** What a sender is to the owner of `book`. */
export type SenderKind = "contact" | "request" | "blocked";

const sorted = (names: Iterable<string>) => [...new Set(names)].sort();
const without = (names: string[], name: string) => names.filter((n) => n !== name);

/** Whether `name` is in the contacts, a request, blocked, or a stranger who has not written. */
export function senderKind(book: ContactBook, name: string): SenderKind {
  if (book.blocked.includes(name)) return "blocked";
  if (book.contacts.includes(name)) return "contact";
  return "request";
}

/** The contact list full: a typed error the form shows. */
export class ContactBookFullError extends Error {
  override name = "ContactBookFullError";
  constructor() {
    super(`You have ${MAX_CONTACTS} contacts, the most there can be: remove one first`);
  }
}

/** `name` becomes a contact (an accepted request, an unblocked user added again). */
export function addContact(book: ContactBook, name: string): ContactBook {
  if (book.contacts.includes(name)) return book;
  if (book.contacts.length >= MAX_CONTACTS) throw new ContactBookFullError();
  return {
    contacts: sorted([...book.contacts, name]),
    requests: without(book.requests, name),
    blocked: without(book.blocked, name),
  };
}

/** `name` is no contact any more (a later message from them is a request again). */
export function removeContact(book: ContactBook, name: string): ContactBook {
  return { ...book, contacts: without(book.contacts, name) };
}

/** `name` wrote without being a contact: listed under requests (unless blocked). */
export function noteRequest(book: ContactBook, name: string): ContactBook {
  if (senderKind(book, name) !== "request" || book.requests.includes(name)) return book;
  return { ...book, requests: sorted([...book.requests, name].slice(-MAX_LISTED)) };
}

/** `name` is blocked: no contact, no request. */
export function blockUser(book: ContactBook, name: string): ContactBook {
  if (book.blocked.includes(name)) return book;
  return {
    contacts: without(book.contacts, name),
    requests: without(book.requests, name),
    blocked: sorted([...book.blocked, name].slice(-MAX_LISTED)),
  };
}

/** `name` is no longer blocked (neither a contact nor a request until they write or are added). */
export function unblockUser(book: ContactBook, name: string): ContactBook {
  return { ...book, blocked: without(book.blocked, name) };
}

/**
 * The book after a hand-over brought `incoming` (the user's other device): contacts and blocks
 * of both; a user blocked on either device stays blocked.
 */
export function mergeBooks(local: ContactBook, incoming: ContactBook): ContactBook {
  const blocked = sorted([...local.blocked, ...incoming.blocked]);
  const contacts = sorted([...local.contacts, ...incoming.contacts])
    .filter((n) => !blocked.includes(n)).slice(0, MAX_CONTACTS);
  const requests = sorted([...local.requests, ...incoming.requests])
    .filter((n) => !blocked.includes(n) && !contacts.includes(n));
  return { contacts, requests, blocked };
}

/** The book as a hand-over carries it (JSON text). */
export function handoverContacts(book: ContactBook): string {
  return JSON.stringify({
    contacts: book.contacts,
    requests: book.requests,
    blocked: book.blocked,
  });
}

/**
 * Parses the book a hand-over carries (from the user's own other device, still checked): valid
 * usernames other than `owner`, within the limits. Throws ProtocolError.
 */
export function parseHandoverContacts(value: unknown, owner: string): ContactBook {
  const o = readObject(value, "contacts");
  const names = (key: string, max: number) =>
    readArray(o, key, "contacts", max, (v, path) => {
      if (typeof v !== "string" || !isValidUsername(v) || v === owner) {
        throw new ProtocolError("invalid_username", path, "Not a contact's username");
      }
      return v;
    });
  const incoming = {
    contacts: sorted(names("contacts", MAX_CONTACTS)),
    requests: sorted(names("requests", MAX_LISTED)),
    blocked: sorted(names("blocked", MAX_LISTED)),
  };
  // Keep the lists disjoint whatever was sent.
  return mergeBooks(EMPTY_BOOK, incoming);
}

/** A book read back from storage: anything malformed is dropped, not trusted. */
export function storedBook(value: unknown, owner: string): ContactBook {
  if (value === undefined || value === null) return EMPTY_BOOK;
  try {
    return parseHandoverContacts(value, owner);
  } catch {
    return EMPTY_BOOK;
  }
}

// --- links ----------------------------------------------------------------------------------

/** A key id (`trust.ts` `keyIdOf`): SHA-256, base64url without padding. */
const KEY_ID_PATTERN = /^[A-Za-z0-9_-]{43}$/;

/** What an add-contact link carries. */
export interface ContactLink {
  username: string;
  /** The key id the link's owner has: the servers' answer must have the same. */
  keyId: string;
}

/** The link that adds `username` (with key id `keyId`) on the app at `origin`. */
export function contactLink(origin: string, link: ContactLink): string {
  return `${origin.replace(/\/+$/, "")}/#add=${link.username}&fp=${link.keyId}`;
}

/** A link to add a contact that cannot be used; the sentence says why. */
export class BadContactLinkError extends Error {
  override name = "BadContactLinkError";
}

/**
 * The contact an address's fragment (`#add=<name>&fp=<key id>`) asks to add; null when the
 * fragment is no add-contact link at all. Throws {@link BadContactLinkError} for one that is
 * malformed (a bad name or key id, a field twice, another field, an oversized fragment).
 */
export function parseContactLink(hash: string): ContactLink | null {
  const fragment = hash.startsWith("#") ? hash.slice(1) : hash;
  if (!/^add=/.test(fragment)) return null;
  if (fragment.length > 200) throw new BadContactLinkError("This contact link is too long");
  const fields = new Map<string, string>();
  for (const part of fragment.split("&")) {
    const eq = part.indexOf("=");
    const key = eq < 0 ? part : part.slice(0, eq);
    if ((key !== "add" && key !== "fp") || eq < 0 || fields.has(key)) {
      throw new BadContactLinkError(
        "This contact link is malformed: it is not a link P2P-Chat made",
      );
    }
    fields.set(key, part.slice(eq + 1));
  }
  const username = fields.get("add")!;
  const keyId = fields.get("fp");
  if (!isValidUsername(username)) {
    throw new BadContactLinkError("This contact link does not carry a valid username");
  }
  if (keyId === undefined || !KEY_ID_PATTERN.test(keyId)) {
    throw new BadContactLinkError(
      `This contact link for ${username} has no valid key id: ask them for their link again`,
    );
  }
  return { username, keyId };
}
