/**
 * The one error vocabulary of the users layer: every refusal a browser may see is a
 * {@link UserError} carrying the protocol's stable `code` and a sentence the user can act on.
 * Storage failures below (`UnavailableError`, `UsernameTakenError`, `MailboxFullError` from
 * replication) are turned into these where the services call the ring.
 */
import type { ErrorCode } from "../../shared/mod.ts";

/** A request of a user was refused; `code` is what the browser switches on. */
export class UserError extends Error {
  override name = "UserError";
  /** Creates the error. */
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}

/** What the user is told when the ring cannot answer right now (nothing was changed). */
export const UNAVAILABLE_MESSAGE = "The servers cannot answer right now: try again shortly";
