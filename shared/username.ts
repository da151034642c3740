/** Rules for the names people register under, shared by the browser form and the server. */

/** Letters, digits, '-' or '_', 3 to 32 characters. */
export const USERNAME_PATTERN = /^[A-Za-z0-9_-]{3,32}$/;

/** The sentence shown when a username breaks {@link USERNAME_PATTERN}. */
export const USERNAME_RULE = "Username must be 3–32 letters, digits, '-' or '_'";

/** Secrets (passwords, later derived auth secrets) are 8 to 256 characters. */
export const SECRET_RULE = "Password must be 8–256 characters";

/** Whether `name` is an acceptable username. */
export function isValidUsername(name: string): boolean {
  return USERNAME_PATTERN.test(name);
}
