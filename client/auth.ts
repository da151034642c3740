/**
 * Turns what the user types into what is sent to the server (DESIGN §4): the password is
 * stretched in the browser (PBKDF2-SHA-256, 600,000 iterations, then HKDF; see
 * `shared/crypto/derive.ts`) with the account's salt into an auth secret — the only credential
 * the server ever sees — and a non-extractable wrapping key that stays in this page's memory to
 * unwrap the user's private keys. Neither the password nor the wrapping key is stored or sent.
 *
 * The salt is random per account, chosen here at registration and served by the servers before
 * login (`login_params`; a name without an account gets a fake salt of the same form). A legacy
 * account (salted with its name) moves to a random salt at its next login ({@link passwordLogin}:
 * the private keys are wrapped again with the new wrapping key, and salt, secret and wrapped keys
 * are replaced on the servers in one record).
 */
import { deriveCredentials, newSalt } from "../shared/crypto/derive.ts";
import {
  parseWrappedPrivateKey,
  rewrapPrivateKey,
  type WrappedPrivateKey,
} from "../shared/crypto/keys.ts";
import type { SessionApi, SessionInfo } from "./session.ts";

/** What a login needs: the secret for the server, the key that stays here. */
export interface LoginCredentials {
  /** Sent at register and login (base64url, 43 characters). */
  secret: string;
  /** AES-GCM key for the private keys; non-extractable, memory only. */
  wrappingKey: CryptoKey;
  /** The salt both were derived with (base64url). */
  salt: string;
}

/** Derives the login credentials from `password` with the account's `salt`. */
export async function deriveLogin(password: string, salt: string): Promise<LoginCredentials> {
  const { authSecret, wrappingKey } = await deriveCredentials(password, salt);
  return { secret: authSecret, wrappingKey, salt };
}

/** Credentials for a new account (or a rekey): a fresh random salt, and what it derives. */
export function newCredentials(password: string): Promise<LoginCredentials> {
  return deriveLogin(password, newSalt());
}

/**
 * The private keys of `wrapped` (the `AccountKeys.wrapped` JSON: `{v: 1, encryption, signing}`)
 * wrapped with `newKey` instead of `oldKey`. Throws `KeyUnwrapError` when `oldKey` does not
 * open them, `ProtocolError` when the record is malformed.
 */
export async function rewrapAccountKeys(
  wrapped: string,
  oldKey: CryptoKey,
  newKey: CryptoKey,
): Promise<string> {
  const obj = JSON.parse(wrapped) as Record<string, unknown>;
  if (obj.v !== 1) throw new TypeError("Unsupported wrapped keys version");
  const pair: Record<"encryption" | "signing", WrappedPrivateKey> = {
    encryption: parseWrappedPrivateKey(obj.encryption, "wrapped.encryption"),
    signing: parseWrappedPrivateKey(obj.signing, "wrapped.signing"),
  };
  const [encryption, signing] = await Promise.all([
    rewrapPrivateKey(pair.encryption, oldKey, newKey),
    rewrapPrivateKey(pair.signing, oldKey, newKey),
  ]);
  return JSON.stringify({ v: 1, encryption, signing });
}

/**
 * A password login: asks the servers for the account's salt, derives the secret with it and
 * logs in. A legacy account (the session asks for a `rekey`) then moves to a random salt: its
 * keys are wrapped again and the servers store the new salt, secret and wrapped keys together;
 * if that fails (servers unavailable) the account stays as it was and moves at a later login.
 * Resolves the session (its `keys` as they are now stored) and the wrapping key that opens them.
 * Rejects with the server's error (`wrong_credentials`, `unavailable`, …).
 */
export async function passwordLogin(
  session: Pick<SessionApi, "loginParams" | "login" | "rekey">,
  username: string,
  password: string,
): Promise<{ info: SessionInfo; wrappingKey: CryptoKey }> {
  const salt = await session.loginParams(username);
  const credentials = await deriveLogin(password, salt);
  const info = await session.login(username, credentials.secret);
  if (!info.rekey || !info.keys) return { info, wrappingKey: credentials.wrappingKey };
  try {
    const next = await newCredentials(password);
    const wrapped = await rewrapAccountKeys(
      info.keys.wrapped,
      credentials.wrappingKey,
      next.wrappingKey,
    );
    await session.rekey(next.salt, next.secret, wrapped);
    const { rekey: _done, ...rest } = info;
    return { info: { ...rest, keys: { ...info.keys, wrapped } }, wrappingKey: next.wrappingKey };
  } catch (err) {
    console.warn(`Your account keeps its old salt until a later login: ${(err as Error).message}`);
    return { info, wrappingKey: credentials.wrappingKey };
  }
}
