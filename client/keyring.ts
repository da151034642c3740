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
 *   for the sender, and opens incoming ones after verifying the sender's signature. Contacts'
 *   public keys come from the directory (`get_keys`), cached per session; the last key seen of
 *   each contact is stored, and a different one is reported as a key change.
 * - Accounts made before keys existed have none: messages to and from them stay plaintext (the
 *   old path), which is logged and shown; a plaintext message from a user who has keys is
 *   rejected (no downgrade).
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

/** The logged-in user's keys: private halves non-extractable, public halves as SPKI base64url. */
export interface OwnKeys {
  /** RSA-OAEP private key (decrypt), non-extractable. */
  encryption: CryptoKey;
  /** RSA-PSS private key (sign), non-extractable. */
  signing: CryptoKey;
  encryptionPublic: string;
  signingPublic: string;
}

/** A user's public keys, as the directory hands them out (SPKI base64url). */
export interface PublicKeys {
  encryption: string;
  signing: string;
}

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
  loadContact(owner: string, contact: string): Promise<PublicKeys | null>;
  saveContact(owner: string, contact: string, keys: PublicKeys): Promise<void>;
}

interface StoredOwn {
  token: string;
  keys: OwnKeys;
}

/** A key store in memory (tests; or a browser without IndexedDB). */
export function createMemoryKeyStore(): KeyStore {
  const own = new Map<string, StoredOwn>();
  const contacts = new Map<string, PublicKeys>();
  return {
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
    loadContact: (owner, c) => Promise.resolve(contacts.get(`${owner}/${c}`) ?? null),
    saveContact: (owner, c, keys) => Promise.resolve(void contacts.set(`${owner}/${c}`, keys)),
  };
}

/**
 * The browser's key store: IndexedDB database `p2pchat-keys`, store `own` (per user, the
 * non-extractable private `CryptoKey`s, which IndexedDB keeps by structured clone without ever
 * exposing their bytes) and store `contacts` (per owner/contact, the public keys last seen).
 */
export function createIdbKeyStore(): KeyStore {
  let db: ReturnType<typeof open> | null = null;
  const open = () =>
    openDB("p2pchat-keys", 1, {
      upgrade(d) {
        d.createObjectStore("own");
        d.createObjectStore("contacts");
      },
    });
  const get = () => db ??= open();
  return {
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
    async loadContact(owner, contact) {
      return (await (await get()).get("contacts", `${owner}/${contact}`) as
        | PublicKeys
        | undefined) ?? null;
    },
    async saveContact(owner, contact, keys) {
      await (await get()).put("contacts", keys, `${owner}/${contact}`);
    },
  };
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

interface ContactEntry {
  raw: PublicKeys;
  encryption: CryptoKey;
  signing: CryptoKey;
}

/** Options of a {@link Keyring}. */
export interface KeyringOptions {
  me: string;
  /** The unlocked keys, or null for an account without keys (old accounts). */
  own: OwnKeys | null;
  store: KeyStore;
  /** The directory's public keys of `user`, or null if the user has none (`unknown_user`). */
  fetchKeys(user: string): Promise<PublicKeys | null>;
  /** A contact's keys differ from the ones last seen: the new ones are now stored. */
  onKeyChanged?(contact: string): void;
}

/** Seals and opens the messages of one logged-in session. */
export class Keyring {
  readonly me: string;
  readonly own: OwnKeys | null;
  #opts: KeyringOptions;
  #contacts = new Map<string, Promise<ContactEntry | null>>();
  #ownEncryptionPublic: Promise<CryptoKey> | null = null;
  #sealed = new Map<string, Envelope>();

  constructor(options: KeyringOptions) {
    this.#opts = options;
    this.me = options.me;
    this.own = options.own;
  }

  /** The public keys of `user` (cached for the session; `refresh` asks the directory again). */
  contactKeys(user: string, refresh = false): Promise<ContactEntry | null> {
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

  async #fetch(user: string): Promise<ContactEntry | null> {
    const raw = await this.#opts.fetchKeys(user);
    if (!raw) return null;
    const [encryption, signing] = await Promise.all([
      importPublicKey(raw.encryption, "RSA-OAEP"),
      importPublicKey(raw.signing, "RSA-PSS"),
    ]);
    const known = await this.#opts.store.loadContact(this.me, user);
    if (!known || known.encryption !== raw.encryption || known.signing !== raw.signing) {
      await this.#opts.store.saveContact(this.me, user, raw);
      if (known) {
        console.warn(`The keys of "${user}" changed since they were last seen`);
        this.#opts.onKeyChanged?.(user);
      }
    }
    return { raw, encryption, signing };
  }

  /**
   * Seals `message` for its recipient and for this user, signed by this user; the same envelope
   * for every path and retry. Null when it cannot be encrypted (this account or the recipient's
   * has no keys): the caller then sends the plaintext message (old accounts only).
   */
  async seal(message: ChatMessage): Promise<Envelope | null> {
    const cached = this.#sealed.get(message.id);
    if (cached) return cached;
    const own = this.own;
    const to = await this.contactKeys(message.to);
    if (!own || !to) {
      console.warn(
        `Message ${message.id} to "${message.to}" is sent unencrypted: ` +
          (own ? `"${message.to}" has no keys` : "this account has no keys"),
      );
      return null;
    }
    this.#ownEncryptionPublic ??= importPublicKey(own.encryptionPublic, "RSA-OAEP");
    const envelope = await seal(
      {
        id: message.id,
        from: message.from,
        to: message.to,
        sentAt: message.sentAt,
        text: message.text,
      },
      own.signing,
      to.encryption,
      await this.#ownEncryptionPublic,
    );
    this.#sealed.set(message.id, envelope);
    return envelope;
  }

  /**
   * Verifies and decrypts an envelope that the path says came from `from`. Throws
   * `TamperedEnvelopeError` for a bad signature or altered content (after asking the directory
   * once more, in case the sender's key changed), `NotForMeError`, or an Error if the envelope
   * claims another sender or recipient, or this account has no keys.
   */
  async open(envelope: Envelope, from: string): Promise<ChatMessage> {
    if (envelope.from !== from || envelope.to !== this.me) {
      throw new Error(`Envelope from "${from}" claims ${envelope.from} → ${envelope.to}`);
    }
    const own = this.own;
    if (!own) throw new Error("This account has no keys: cannot decrypt");
    let sender = await this.contactKeys(from);
    if (!sender) throw new TamperedEnvelopeError(`"${from}" has no keys: cannot verify`);
    let plain;
    try {
      plain = await openEnvelope(envelope, own.encryption, sender.signing);
    } catch (err) {
      if (!(err instanceof TamperedEnvelopeError)) throw err;
      const fresh = await this.contactKeys(from, true);
      if (!fresh || fresh.raw.signing === sender.raw.signing) throw err;
      sender = fresh;
      plain = await openEnvelope(envelope, own.encryption, sender.signing);
    }
    return { v: PEER_PROTOCOL_VERSION, type: "chat", ...plain };
  }

  /**
   * Whether a plaintext chat message from `from` may be accepted: only when this account or
   * theirs has no keys (old accounts); otherwise it is a downgrade and must be rejected.
   */
  async allowsPlaintext(from: string): Promise<boolean> {
    if (!this.own) return true;
    return (await this.contactKeys(from)) === null;
  }

  /** Fingerprints of `user`'s public keys, or null if they have none. */
  async fingerprints(user: string): Promise<PublicKeys | null> {
    const raw = user === this.me
      ? (this.own
        ? { encryption: this.own.encryptionPublic, signing: this.own.signingPublic }
        : null)
      : (await this.contactKeys(user))?.raw ?? null;
    if (!raw) return null;
    return {
      encryption: await fingerprint(raw.encryption),
      signing: await fingerprint(raw.signing),
    };
  }
}
