/**
 * Turns what the user types into what is sent to the server (DESIGN §4): the password is
 * stretched in the browser (PBKDF2-SHA-256, 600,000 iterations, then HKDF; see
 * `shared/crypto/derive.ts`) into an auth secret — the only credential the server ever sees —
 * and a non-extractable wrapping key that stays in this page's memory to unwrap the user's
 * private keys. Neither the password nor the wrapping key is stored or sent anywhere.
 */
import { deriveCredentials } from "../shared/crypto/derive.ts";

/** What a login needs: the secret for the server, the key that stays here. */
export interface LoginCredentials {
  /** Sent at register and login (base64url, 43 characters). */
  secret: string;
  /** AES-GCM key for the private keys; non-extractable, memory only. */
  wrappingKey: CryptoKey;
}

/** Derives the login credentials of `username` from `password`. */
export async function deriveLogin(username: string, password: string): Promise<LoginCredentials> {
  const { authSecret, wrappingKey } = await deriveCredentials(username, password);
  return { secret: authSecret, wrappingKey };
}

/** The auth secret sent at register and login for (`username`, `password`). */
export async function deriveSecret(username: string, password: string): Promise<string> {
  return (await deriveLogin(username, password)).secret;
}
