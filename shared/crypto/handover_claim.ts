/**
 * The signed statement of a deferred hand-over claim (DESIGN §4): a device whose session was
 * replaced while it was offline proves to a server that it still holds the user's private
 * signing key by signing the server's fresh challenge together with the old session's token.
 * The server checks it with the account's public key, so neither the token alone (it may have
 * leaked) nor a replayed signature (the challenge is single-use) admits anyone.
 */
import { lengthPrefixed, toBase64Url } from "./encoding.ts";
import { sign, verifySignature } from "./hybrid.ts";

/** Domain of the claim's signature, so it can never pass for a message or a batch. */
const CLAIM_DOMAIN = "p2p-chat handover claim 1";

function claimBytes(username: string, token: string, challenge: string): Uint8Array<ArrayBuffer> {
  return lengthPrefixed([CLAIM_DOMAIN, username, token, challenge]);
}

/** Signs a claim of `username`'s superseded session `token` over the server's `challenge`. */
export async function signHandoverClaim(
  username: string,
  token: string,
  challenge: string,
  signingKey: CryptoKey,
): Promise<string> {
  return toBase64Url(await sign(signingKey, claimBytes(username, token, challenge)));
}

/** Whether `signature` is `username`'s claim of `token` over `challenge`; never throws. */
export function verifyHandoverClaim(
  username: string,
  token: string,
  challenge: string,
  signature: string,
  verifyKey: CryptoKey,
): Promise<boolean> {
  return verifySignature(verifyKey, signature, () => claimBytes(username, token, challenge));
}
