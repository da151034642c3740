/**
 * The user's keys in the browser (DESIGN §4) and the end-to-end sealing of chat messages.
 *
 * - At registration {@link createAccountKeys} generates the RSA-OAEP and RSA-PSS pairs, wraps the
 *   private halves with the wrapping key derived from the password, and yields the
 *   {@link AccountKeys} sent in `register` (public keys + wrapped private keys, opaque to servers).
 * - At login {@link unlockAccountKeys} unwraps them from the `session` frame into
 *   non-extractable private keys. A {@link KeyStore} (IndexedDB in the browser) keeps these
 *   non-extractable `CryptoKey`s per user, so a page reload resumes without the password; they
 *   are deleted on logout, when the session is superseded or lost, and replaced at the next login.
 * - A {@link Keyring} (one per logged-in session) seals outgoing messages for the recipient and
 *   for the sender, and opens incoming ones after verifying the sender's signature. There is no
 *   plaintext path: every message is sealed, for the contact's *pinned* keys only, and every
 *   message received must verify with the sender's pinned signing key. The keys pinned on first
 *   use are kept in the key store per user and contact ({@link PinRecord}, `trust.ts`); a
 *   directory answer that differs from the pin (other keys, or none) blocks sealing for that
 *   contact until the user compares the safety number and accepts ({@link Keyring.accept}).
 *
 * How sealed messages travel (the sealed frame, mailbox entries) is `shared/sealed_frame.ts`.
 */
import { openDB } from "idb";
import {
  type AccountKeys,
  type ChatMessage,
  PEER_PROTOCOL_VERSION,
  readObject,
} from "../shared/mod.ts";
import {
  type Envelope,
  exportPublicKey,
  fingerprint,
  generateUserKeys,
  importPublicKey,
  KeyUnwrapError,
  openEnvelope,
  parseWrappedPrivateKey,
  seal,
  TamperedEnvelopeError,
  unwrapPrivateKey,
  type UserKeyPairs,
  wrapPrivateKey,
} from "../shared/crypto/mod.ts";
import {
  acceptPending,
  keyIdOf,
  observeDirectory,
  type PinRecord,
  type PublicKeys,
  type SafetyNumber,
  safetyNumber,
  type TrustStatus,
  trustStatus,
} from "./trust.ts";
import { type ContactBook, EMPTY_BOOK, storedBook } from "./contacts.ts";

/** The logged-in user's keys: private halves non-extractable, public halves as SPKI base64url. */
export interface OwnKeys {
  /** RSA-OAEP private key (decrypt), non-extractable. */
  encryption: CryptoKey;
  /** RSA-PSS private key (sign), non-extractable. */
  signing: CryptoKey;
  encryptionPublic: string;
  signingPublic: string;
}

export type { PublicKeys };

/**
 * Where a browser keeps its user's unlocked keys and the keys it has seen of contacts. The
 * unlocked keys are kept with the session token they belong to: a session superseded in another
 * tab of this browser does not delete the keys of the session that replaced it.
 */
export interface KeyStore {
  /** `user`'s unlocked keys, if saved for the session `token`. */
  loadOwn(user: string, token: string): Promise<OwnKeys | null>;
  saveOwn(user: string, token: string, keys: OwnKeys): Promise<void>;
  /** Deletes `user`'s unlocked keys if they belong to session `token`. */
  deleteOwn(user: string, token: string): Promise<void>;
  /**
   * Every user's unlocked keys kept here, with their session's token: after a restart, those of
   * a session that was replaced meanwhile may still hand the history over (a deferred hand-over).
   */
  listOwn(): Promise<Array<{ user: string; token: string; keys: OwnKeys }>>;
  /** The keys `owner` pinned for `contact`, or null if none yet. */
  loadPin(owner: string, contact: string): Promise<PinRecord | null>;
  /** Keeps (replaces) `owner`'s record of `pin.contact`. */
  savePin(owner: string, pin: PinRecord): Promise<void>;
  /** Every record of `owner` (the hand-over carries them to the next device). */
  listPins(owner: string): Promise<PinRecord[]>;
  /** `owner`'s contact book (`contacts.ts`): contacts, requests, blocked users. */
  loadBook(owner: string): Promise<ContactBook>;
  saveBook(owner: string, book: ContactBook): Promise<void>;
}

interface StoredOwn {
  token: string;
  keys: OwnKeys;
}

/** A key store in memory (tests; or a browser without IndexedDB). */
export function createMemoryKeyStore(): KeyStore {
  const own = new Map<string, StoredOwn>();
  const pins = new Map<string, PinRecord>();
  const books = new Map<string, ContactBook>();
  return {
    loadBook: (owner) => Promise.resolve(structuredClone(books.get(owner) ?? EMPTY_BOOK)),
    saveBook: (owner, book) => Promise.resolve(void books.set(owner, structuredClone(book))),
    loadOwn: (user, token) => {
      const s = own.get(user);
      return Promise.resolve(s?.token === token ? s.keys : null);
    },
    saveOwn: (user, token, keys) => Promise.resolve(void own.set(user, { token, keys })),
    deleteOwn: (user, token) => {
      if (own.get(user)?.token === token) own.delete(user);
      return Promise.resolve();
    },
    listOwn: () =>
      Promise.resolve([...own].map(([user, s]) => ({ user, token: s.token, keys: s.keys }))),
    loadPin: (owner, c) => Promise.resolve(structuredClone(pins.get(`${owner}/${c}`) ?? null)),
    savePin: (owner, pin) =>
      Promise.resolve(void pins.set(`${owner}/${pin.contact}`, structuredClone(pin))),
    listPins: (owner) =>
      Promise.resolve(
        [...pins].filter(([k]) => k.startsWith(`${owner}/`)).map(([, p]) => structuredClone(p)),
      ),
  };
}

/**
 * The browser's key store: IndexedDB database `p2pchat-keys`, store `own` (per user, the
 * non-extractable private `CryptoKey`s, which IndexedDB keeps by structured clone without ever
 * exposing their bytes) and store `contacts` (per owner/contact, the {@link PinRecord}; an
 * older version kept the bare public keys there, which are read as a pin), and store `books`
 * (per owner, the contact book of `contacts.ts`).
 */
export function createIdbKeyStore(): KeyStore {
  let db: ReturnType<typeof open> | null = null;
  const open = () =>
    openDB("p2pchat-keys", 2, {
      upgrade(d, oldVersion) {
        if (oldVersion < 1) {
          d.createObjectStore("own");
          d.createObjectStore("contacts");
        }
        d.createObjectStore("books");
      },
    });
  const get = () => db ??= open();
  return {
    async loadBook(owner) {
      return storedBook(await (await get()).get("books", owner), owner);
    },
    async saveBook(owner, book) {
      await (await get()).put("books", structuredClone(book), owner);
    },
    async loadOwn(user, token) {
      const s = await (await get()).get("own", user) as StoredOwn | undefined;
      return s?.token === token ? s.keys : null;
    },
    async saveOwn(user, token, keys) {
      const stored: StoredOwn = { token, keys };
      await (await get()).put("own", stored, user);
    },
    async deleteOwn(user, token) {
      const tx = (await get()).transaction("own", "readwrite");
      const s = await tx.store.get(user) as StoredOwn | undefined;
      if (s?.token === token) await tx.store.delete(user);
      await tx.done;
    },
    async listOwn() {
      const tx = (await get()).transaction("own", "readonly");
      const [users, stored] = await Promise.all([tx.store.getAllKeys(), tx.store.getAll()]);
      await tx.done;
      return users.map((user, i) => {
        const s = stored[i] as StoredOwn;
        return { user: String(user), token: s.token, keys: s.keys };
      });
    },
    async loadPin(owner, contact) {
      const v = await (await get()).get("contacts", `${owner}/${contact}`);
      return v === undefined ? null : await storedPin(contact, v);
    },
    async savePin(owner, pin) {
      await (await get()).put("contacts", pin, `${owner}/${pin.contact}`);
    },
    async listPins(owner) {
      const db = await get();
      const range = IDBKeyRange.bound(`${owner}/`, `${owner}/\uffff`);
      const [keys, values] = await Promise.all([
        db.getAllKeys("contacts", range),
        db.getAll("contacts", range),
      ]);
      return await Promise.all(
        values.map((v, i) => storedPin(String(keys[i]).slice(owner.length + 1), v)),
      );
    },
  };
}

/** A stored record; the bare public keys an older version kept count as pinned long ago. */
async function storedPin(contact: string, value: unknown): Promise<PinRecord> {
  const v = value as Partial<PinRecord> & Partial<PublicKeys>;
  if (typeof v.keyId === "string") return v as PinRecord;
  const keys = { encryption: String(v.encryption), signing: String(v.signing) };
  return { contact, keyId: await keyIdOf(keys), keys, pinnedAt: 0, pending: null, events: [] };
}

/** The private keys could not be unlocked: shown to the user as is. */
export class KeysLockedError extends Error {
  override name = "KeysLockedError";
}

interface WrappedPair {
  v: 1;
  encryption: ReturnType<typeof parseWrappedPrivateKey>;
  signing: ReturnType<typeof parseWrappedPrivateKey>;
}

/**
 * Generates the user's key pairs and wraps the private keys with `wrappingKey`. Returns what
 * `register` sends and the unlocked (non-extractable) keys to keep.
 */
export async function createAccountKeys(
  wrappingKey: CryptoKey,
  generate: () => Promise<UserKeyPairs> = generateUserKeys,
): Promise<{ account: AccountKeys; own: OwnKeys }> {
  const pairs = await generate();
  const [encryption, signing, encPublic, sigPublic] = await Promise.all([
    wrapPrivateKey(pairs.encryption.privateKey, wrappingKey),
    wrapPrivateKey(pairs.signing.privateKey, wrappingKey),
    exportPublicKey(pairs.encryption.publicKey),
    exportPublicKey(pairs.signing.publicKey),
  ]);
  const wrapped: WrappedPair = { v: 1, encryption, signing };
  const account: AccountKeys = {
    encryption: encPublic,
    signing: sigPublic,
    wrapped: JSON.stringify(wrapped),
  };
  // Unwrapping again yields non-extractable private keys: the extractable ones are dropped.
  return { account, own: await unlockAccountKeys(account, wrappingKey) };
}

/**
 * Unwraps the private keys of `account` with `wrappingKey`. Throws {@link KeysLockedError} when
 * the record is malformed or the wrapping key does not open it.
 */
export async function unlockAccountKeys(
  account: AccountKeys,
  wrappingKey: CryptoKey,
): Promise<OwnKeys> {
  let pair: WrappedPair;
  try {
    const obj = readObject(JSON.parse(account.wrapped), "wrapped");
    if (obj.v !== 1) throw new Error("unsupported version");
    pair = {
      v: 1,
      encryption: parseWrappedPrivateKey(obj.encryption, "wrapped.encryption"),
      signing: parseWrappedPrivateKey(obj.signing, "wrapped.signing"),
    };
    if (pair.encryption.alg !== "RSA-OAEP" || pair.signing.alg !== "RSA-PSS") {
      throw new Error("keys of the wrong kind");
    }
  } catch (err) {
    throw new KeysLockedError(
      `Your stored private keys are unreadable (${
        (err as Error).message
      }): cannot decrypt messages`,
    );
  }
  try {
    const [encryption, signing] = await Promise.all([
      unwrapPrivateKey(pair.encryption, wrappingKey),
      unwrapPrivateKey(pair.signing, wrappingKey),
    ]);
    return {
      encryption,
      signing,
      encryptionPublic: account.encryption,
      signingPublic: account.signing,
    };
  } catch (err) {
    if (err instanceof KeyUnwrapError) {
      throw new KeysLockedError(
        "Your private keys cannot be unlocked with this password: they were altered on the " +
          "servers or wrapped with another password",
      );
    }
    throw err;
  }
}

/** How one contact's keys stand, as the chat shows it. */
export interface ContactTrust {
  contact: string;
  status: TrustStatus;
  /** The record kept for the contact, or null when nothing was ever pinned. */
  pin: PinRecord | null;
}

/** A contact's trust, with the pinned keys imported (null when not known on this device). */
interface ContactEntry {
  trust: ContactTrust;
  /** Pinned RSA-OAEP public key. */
  encryption: CryptoKey | null;
  /** Pinned RSA-PSS public key. */
  signing: CryptoKey | null;
}

/**
 * Nothing can be sealed for `contact`: the account has no keys, or the directory answers other
 * keys than the pinned ones (or none) and the user has not accepted them.
 */
export class UntrustedKeysError extends Error {
  override name = "UntrustedKeysError";
  /** Creates the error for `contact`, whose keys stand as `status`. */
  constructor(readonly contact: string, readonly status: TrustStatus) {
    super(
      status === "no_keys"
        ? `${contact} has no keys: messages to ${contact} cannot be encrypted, so none are sent`
        : `The key of ${contact} changed: compare the safety number and accept the new key ` +
          "before sending",
    );
  }
}

/** A received message that is refused: not sealed, not for this user, or not from the pin. */
export class RefusedMessageError extends Error {
  override name = "RefusedMessageError";
}

/** Options of a {@link Keyring}. */
export interface KeyringOptions {
  me: string;
  /** The unlocked keys of this user. */
  own: OwnKeys;
  store: KeyStore;
  /** The directory's public keys of `user`, or null if it says they have none (`unknown_user`). */
  fetchKeys(user: string): Promise<PublicKeys | null>;
  /** How a contact's keys stand, after every look-up or acceptance. */
  onTrust?(trust: ContactTrust): void;
  /** Wall clock, ms since the epoch. @default Date.now */
  now?(): number;
}

/** What a safety-number comparison shows for one contact. */
export interface SafetyCheck extends SafetyNumber {
  contact: string;
  /** The contact's key id the number is computed with (what {@link Keyring.accept} takes). */
  keyId: string;
  /** Whether these are keys pending acceptance (a change) rather than the pinned ones. */
  isPending: boolean;
  /** Fingerprints of those keys. */
  fingerprints: PublicKeys;
}

/** Seals and opens the messages of one logged-in session; see the module comment. */
export class Keyring {
  readonly me: string;
  readonly own: OwnKeys;
  #opts: KeyringOptions;
  #now: () => number;
  #contacts = new Map<string, Promise<ContactEntry>>();
  /** Record updates per contact, one after another. */
  #updates = new Map<string, Promise<unknown>>();
  #ownEncryptionPublic: Promise<CryptoKey> | null = null;
  #ownKeyId: Promise<string> | null = null;
  /** Envelopes sealed per message id, with the key id they were sealed for. */
  #sealed = new Map<string, { keyId: string; envelope: Envelope }>();

  constructor(options: KeyringOptions) {
    this.#opts = options;
    this.#now = options.now ?? (() => Date.now());
    this.me = options.me;
    this.own = options.own;
  }

  /**
   * How `user`'s keys stand, after asking the directory (once per session; `refresh` asks it
   * again). Rejects when the directory cannot be asked (disconnected); that is not remembered.
   */
  async trustOf(user: string, refresh = false): Promise<ContactTrust> {
    return (await this.#contactKeys(user, refresh)).trust;
  }

  /**
   * How `user`'s keys stand by what this device has kept, without asking the directory (while
   * the servers cannot be reached).
   */
  async storedTrust(user: string): Promise<ContactTrust> {
    const pin = await this.#opts.store.loadPin(this.me, user);
    return { contact: user, status: trustStatus(pin), pin };
  }

  /** Forgets what the directory said and the records read (the store changed underneath). */
  invalidate(): void {
    this.#contacts.clear();
  }

  #contactKeys(user: string, refresh = false): Promise<ContactEntry> {
    let entry = this.#contacts.get(user);
    if (!entry || refresh) {
      entry = this.#fetch(user);
      this.#contacts.set(user, entry);
      // A failed look-up (disconnected) is not remembered.
      entry.catch(() => {
        if (this.#contacts.get(user) === entry) this.#contacts.delete(user);
      });
    }
    return entry;
  }

  async #fetch(user: string): Promise<ContactEntry> {
    const raw = await this.#opts.fetchKeys(user);
    const answer = raw ? { keys: raw, keyId: await keyIdOf(raw) } : null;
    return await this.#update(user, async () => {
      const stored = await this.#opts.store.loadPin(this.me, user);
      const { pin, isUpdated } = observeDirectory(stored, user, answer, this.#now());
      if (isUpdated && pin) {
        await this.#opts.store.savePin(this.me, pin);
        if (pin.pending && pin.pending !== stored?.pending) {
          console.warn(`The keys of "${user}" differ from the pinned ones: sending is blocked`);
        }
      }
      return await this.#entryOf(user, pin);
    });
  }

  /** Runs `fn` after the record updates of `user` already queued. */
  #update<T>(user: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.#updates.get(user) ?? Promise.resolve()).then(fn, fn);
    const settled = run.catch(() => {});
    this.#updates.set(user, settled);
    void settled.then(() => {
      if (this.#updates.get(user) === settled) this.#updates.delete(user);
    });
    return run;
  }

  async #entryOf(user: string, pin: PinRecord | null, isReported = true): Promise<ContactEntry> {
    const [encryption, signing] = pin?.keys
      ? await Promise.all([
        importPublicKey(pin.keys.encryption, "RSA-OAEP"),
        importPublicKey(pin.keys.signing, "RSA-PSS"),
      ])
      : [null, null];
    const trust = { contact: user, status: trustStatus(pin), pin };
    if (isReported) this.#opts.onTrust?.(trust);
    return { trust, encryption, signing };
  }

  /**
   * Seals `message` for its recipient's pinned keys and for this user, signed by this user; the
   * same envelope for every path and retry. Throws {@link UntrustedKeysError} unless the
   * recipient's keys are pinned and the directory agrees (nothing is ever sent in clear).
   */
  async seal(message: ChatMessage): Promise<Envelope> {
    const to = await this.#contactKeys(message.to);
    const pin = to.trust.pin;
    if (to.trust.status !== "trusted" || !pin || !to.encryption) {
      throw new UntrustedKeysError(message.to, to.trust.status);
    }
    const cached = this.#sealed.get(message.id);
    if (cached?.keyId === pin.keyId) return cached.envelope;
    this.#ownEncryptionPublic ??= importPublicKey(this.own.encryptionPublic, "RSA-OAEP");
    const envelope = await seal(
      {
        id: message.id,
        from: message.from,
        to: message.to,
        sentAt: message.sentAt,
        text: message.text,
        ...(message.file ? { file: message.file } : {}),
      },
      this.own.signing,
      to.encryption,
      await this.#ownEncryptionPublic,
    );
    this.#sealed.set(message.id, { keyId: pin.keyId, envelope });
    return envelope;
  }

  /** Whether messages to `user` can be sealed now (their keys are pinned and unchanged). */
  async canSeal(user: string): Promise<boolean> {
    return (await this.#contactKeys(user)).trust.status === "trusted";
  }

  /**
   * Verifies and decrypts an envelope that the path says came from `from`, with `from`'s pinned
   * signing key only. Throws `TamperedEnvelopeError` for a bad signature or altered content
   * (and asks the directory again, so that a key change shows), `NotForMeError`, or
   * {@link RefusedMessageError} when the envelope claims another sender or recipient or
   * nothing is pinned for `from`.
   */
  async open(envelope: Envelope, from: string): Promise<ChatMessage> {
    if (envelope.from !== from || envelope.to !== this.me) {
      throw new RefusedMessageError(
        `it claims ${envelope.from} → ${envelope.to} but came from ${from}`,
      );
    }
    // Without the directory (disconnected), the pin kept on this device is what counts anyway.
    const sender = await this.#contactKeys(from).catch(async () =>
      await this.#entryOf(from, await this.#opts.store.loadPin(this.me, from), false)
    );
    if (!sender.signing) {
      throw new RefusedMessageError(
        sender.trust.pin
          ? `the pinned key of ${from} is not known on this device yet`
          : `${from} has no keys`,
      );
    }
    try {
      const plain = await openEnvelope(envelope, this.own.encryption, sender.signing);
      return { v: PEER_PROTOCOL_VERSION, type: "chat", ...plain };
    } catch (err) {
      // Perhaps the sender's key changed: ask the directory, so that the change shows.
      if (err instanceof TamperedEnvelopeError) void this.#contactKeys(from, true).catch(() => {});
      throw err;
    }
  }

  /**
   * The user compared the safety number for `user`'s pending keys `keyId` and accepts them: they
   * become the pinned keys, and sealing for `user` resumes. Throws `StaleAcceptError` if other
   * keys are pending now.
   */
  async accept(user: string, keyId: string): Promise<ContactTrust> {
    const entry = this.#update(user, async () => {
      const pin = await this.#opts.store.loadPin(this.me, user);
      if (!pin) throw new Error(`Nothing to accept for ${user}`);
      const accepted = acceptPending(pin, keyId, this.#now());
      await this.#opts.store.savePin(this.me, accepted);
      for (const [id, s] of this.#sealed) if (s.keyId !== keyId) this.#sealed.delete(id);
      return await this.#entryOf(user, accepted);
    });
    this.#contacts.set(user, entry);
    return (await entry).trust;
  }

  /**
   * The safety number of this user and `user` as this device sees them: with the keys pending
   * acceptance when the directory changed them (what the user is asked to accept), else with
   * the pinned ones. Null when no keys of `user` are known.
   */
  async safetyCheck(user: string): Promise<SafetyCheck | null> {
    const entry = await this.#contactKeys(user);
    const pin = entry.trust.pin;
    if (!pin) return null;
    const isPending = pin.pending !== null;
    const keys = isPending ? pin.pending?.keys : pin.keys;
    const keyId = isPending ? pin.pending?.keyId : pin.keyId;
    if (!keys || !keyId) return null;
    this.#ownKeyId ??= keyIdOf({
      encryption: this.own.encryptionPublic,
      signing: this.own.signingPublic,
    });
    const number = await safetyNumber(this.me, await this.#ownKeyId, user, keyId);
    return {
      ...number,
      contact: user,
      keyId,
      isPending,
      fingerprints: {
        encryption: await fingerprint(keys.encryption),
        signing: await fingerprint(keys.signing),
      },
    };
  }

  /**
   * Fingerprints of `user`'s public keys (the pending ones during a change), or null if none
   * are known.
   */
  async fingerprints(user: string): Promise<PublicKeys | null> {
    if (user === this.me) {
      return {
        encryption: await fingerprint(this.own.encryptionPublic),
        signing: await fingerprint(this.own.signingPublic),
      };
    }
    return (await this.safetyCheck(user))?.fingerprints ?? null;
  }
}
