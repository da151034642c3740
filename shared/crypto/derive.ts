/**
 * Password-based key derivation (DESIGN §4): the password never leaves the browser.
 *
 * password ─PBKDF2-SHA-256, 600,000 iterations, the account's salt─▶ master key ─HKDF-SHA-256─▶
 * {@link DerivedCredentials.authSecret} (sent to the server, which stores only its bcrypt hash)
 * and {@link DerivedCredentials.wrappingKey} (a non-extractable AES-GCM key that wraps the
 * user's private keys; it never leaves the browser).
 *
 * The salt is 16 random bytes chosen at registration ({@link newSalt}) and served by the servers
 * before login (`login_params`), so nobody can precompute guesses for a name. Accounts made
 * before that are salted with SHA-256("p2p-chat:" + username) ({@link usernameSalt}) until their
 * next login moves them to a random salt.
 *
 * Usernames are case-sensitive identifiers on this system, so normalization is only trimming
 * and Unicode NFC: "alice" and "Alice" are different accounts.
 */
import { fromBase64Url, toBase64Url, utf8 } from "./encoding.ts";

/** PBKDF2 iterations (OWASP 2023 recommendation for PBKDF2-HMAC-SHA-256). */
export const PBKDF2_ITERATIONS = 600_000;

const SALT_PREFIX = "p2p-chat:";
const AUTH_INFO = "p2p-chat auth secret v1";
const WRAP_INFO = "p2p-chat wrapping key v1";

/** What a password yields for one username. */
export interface DerivedCredentials {
  /** 256 bits, base64url (43 characters): the only thing the server ever sees. */
  authSecret: string;
  /** AES-256-GCM key for wrapping the private keys; non-extractable, never sent or stored. */
  wrappingKey: CryptoKey;
}

/** The username as it is salted: trimmed, Unicode NFC. */
export function normalizeUsername(username: string): string {
  return username.trim().normalize("NFC");
}

/** A new random salt for an account: 16 bytes, base64url (22 characters). */
export function newSalt(): string {
  return toBase64Url(crypto.getRandomValues(new Uint8Array(16)));
}

/** The legacy PBKDF2 salt of `username`: SHA-256("p2p-chat:" + normalized username). */
export async function usernameSalt(username: string): Promise<Uint8Array<ArrayBuffer>> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    utf8(SALT_PREFIX + normalizeUsername(username)),
  );
  return new Uint8Array(digest);
}

/** The legacy salt of `username` in the form the servers serve it (base64url, 43 characters). */
export async function legacySalt(username: string): Promise<string> {
  return toBase64Url(await usernameSalt(username));
}

/**
 * Derives the auth secret and the wrapping key from `password` with `salt` (base64url, as the
 * servers serve it). Deterministic for a (password, salt) pair; takes a few hundred milliseconds
 * by design.
 */
export async function deriveCredentials(
  password: string,
  saltText: string,
): Promise<DerivedCredentials> {
  const salt = fromBase64Url(saltText);
  if (salt.length < 16) throw new TypeError("A salt has at least 16 bytes");
  const passwordKey = await crypto.subtle.importKey(
    "raw",
    utf8(password.normalize("NFC")),
    "PBKDF2",
    false,
    ["deriveBits"],
  );
  const masterBits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations: PBKDF2_ITERATIONS },
    passwordKey,
    256,
  );
  const master = await crypto.subtle.importKey("raw", masterBits, "HKDF", false, [
    "deriveBits",
    "deriveKey",
  ]);
  new Uint8Array(masterBits).fill(0);
  const hkdf = (info: string) => ({ name: "HKDF", hash: "SHA-256", salt, info: utf8(info) });
  const authBits = await crypto.subtle.deriveBits(hkdf(AUTH_INFO), master, 256);
  const wrappingKey = await crypto.subtle.deriveKey(
    hkdf(WRAP_INFO),
    master,
    { name: "AES-GCM", length: 256 },
    false,
    ["wrapKey", "unwrapKey"],
  );
  return { authSecret: toBase64Url(authBits), wrappingKey };
}
