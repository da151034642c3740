/**
 * The ring key of a user's records: the 160-bit SHA-1 of `"user:" + username` in fixed-width
 * lowercase hex, the same key the CHORD ring (160-bit id space) looks up. Accounts, presence and
 * mailbox entries of one user share it, so they move between servers together.
 */
import { createHash } from "node:crypto";

/** Ring key (40 hex digits) under which `username`'s records live. */
export function userRingKey(username: string): string {
  return createHash("sha1").update(`user:${username}`).digest("hex");
}
