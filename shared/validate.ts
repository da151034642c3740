/**
 * Small runtime validators for wire messages. Every reader takes `unknown`, checks one field and
 * either returns the typed value or throws a {@link ProtocolError} naming the field path and the
 * bad value, so a frame from a browser or another node never reaches typed code unchecked.
 */

/** Stable machine-readable codes for errors that a client or peer can act on. */
export type ErrorCode =
  | "bad_json"
  | "bad_frame"
  | "frame_too_large"
  | "unsupported_version"
  | "unknown_type"
  | "invalid_username"
  | "invalid_secret"
  | "username_taken"
  | "wrong_credentials"
  | "not_authenticated"
  | "session_expired"
  | "peer_offline"
  | "unavailable"
  | "rate_limited"
  | "internal"
  | "unknown_user"
  | "mailbox_full"
  /** A sender's share of a recipient's mailbox (bytes of files waiting) is used up. */
  | "quota_exceeded"
  /** A hand-over claim for a session that no newer login replaced. */
  | "not_superseded"
  /** A registration without public keys and wrapped private keys. */
  | "keys_required"
  /** The account a session belongs to does not exist (as opposed to `unavailable`). */
  | "unknown_account";

/** A rejected input: which field was wrong, and a sentence a person can act on. */
export class ProtocolError extends Error {
  override name = "ProtocolError";
  /** Creates the error; `path` is the dotted path of the bad field ("" for the whole frame). */
  constructor(
    readonly code: ErrorCode,
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

/** Shortens a bad value for inclusion in an error message. */
export function describeValue(value: unknown): string {
  let text: string;
  try {
    text = typeof value === "string" ? JSON.stringify(value) : String(JSON.stringify(value));
  } catch {
    text = String(value);
  }
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function fail(path: string, expected: string, value: unknown): never {
  throw new ProtocolError(
    "bad_frame",
    path,
    `Invalid field "${path}": expected ${expected}, got ${describeValue(value)}`,
  );
}

/** Returns `value` as a plain object or throws. */
export function readObject(value: unknown, path: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    fail(path || "frame", "an object", value);
  }
  return value as Record<string, unknown>;
}

/** Options for {@link readString}. */
export interface StringRule {
  /** Minimum length in UTF-16 code units. @default 0 */
  min?: number;
  /** Maximum length in UTF-16 code units. */
  max: number;
  /** A pattern the whole string must match. */
  pattern?: RegExp;
}

/** Reads a string field bounded in length (and optionally matching a pattern). */
export function readString(
  obj: Record<string, unknown>,
  key: string,
  path: string,
  rule: StringRule,
): string {
  return checkString(obj[key], path ? `${path}.${key}` : key, rule);
}

/** Checks a bare value (e.g. an array item at path `at`) against a string rule. */
export function checkString(value: unknown, at: string, rule: StringRule): string {
  if (typeof value !== "string") fail(at, "a string", value);
  const min = rule.min ?? 0;
  if (value.length < min || value.length > rule.max) {
    fail(at, `a string of ${min}–${rule.max} characters`, value);
  }
  if (rule.pattern && !rule.pattern.test(value)) {
    fail(at, `a string matching ${rule.pattern}`, value);
  }
  return value;
}

/** Reads a finite number field within `[min, max]`, optionally requiring an integer. */
export function readNumber(
  obj: Record<string, unknown>,
  key: string,
  path: string,
  rule: { min: number; max: number; integer?: boolean },
): number {
  const value = obj[key];
  const at = path ? `${path}.${key}` : key;
  if (typeof value !== "number" || !Number.isFinite(value)) fail(at, "a number", value);
  if (rule.integer && !Number.isInteger(value)) fail(at, "an integer", value);
  if (value < rule.min || value > rule.max) fail(at, `a number in ${rule.min}..${rule.max}`, value);
  return value;
}

/** Reads a boolean field. */
export function readBoolean(obj: Record<string, unknown>, key: string, path: string): boolean {
  const value = obj[key];
  if (typeof value !== "boolean") fail(path ? `${path}.${key}` : key, "a boolean", value);
  return value;
}

/** Reads an array field of at most `max` items, each read by `item`. */
export function readArray<T>(
  obj: Record<string, unknown>,
  key: string,
  path: string,
  max: number,
  item: (value: unknown, path: string) => T,
): T[] {
  const value = obj[key];
  const at = path ? `${path}.${key}` : key;
  if (!Array.isArray(value)) fail(at, "an array", value);
  if (value.length > max) fail(at, `an array of at most ${max} items`, `[${value.length} items]`);
  return value.map((v, i) => item(v, `${at}.${i}`));
}

/** Reads the `v` (protocol version) and `type` fields common to every wire message. */
export function readEnvelope(
  value: unknown,
  version: number,
  types: readonly string[],
): { obj: Record<string, unknown>; type: string } {
  const obj = readObject(value, "");
  if (obj.v !== version) {
    throw new ProtocolError(
      "unsupported_version",
      "v",
      `Unsupported protocol version ${describeValue(obj.v)}: this server speaks version ${version}`,
    );
  }
  const type = obj.type;
  if (typeof type !== "string" || !types.includes(type)) {
    throw new ProtocolError(
      "unknown_type",
      "type",
      `Unknown message type ${describeValue(type)}: expected one of ${types.join(", ")}`,
    );
  }
  return { obj, type };
}

/** Parses a JSON text no longer than `maxBytes`, throwing a typed error for garbage or oversize. */
export function parseJsonFrame(text: unknown, maxBytes: number): unknown {
  if (typeof text !== "string") {
    throw new ProtocolError("bad_json", "", "Frame must be a JSON text, not binary data");
  }
  if (text.length > maxBytes) {
    throw new ProtocolError(
      "frame_too_large",
      "",
      `Frame of ${text.length} bytes is larger than the limit of ${maxBytes} bytes`,
    );
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new ProtocolError("bad_json", "", `Frame is not valid JSON: ${describeValue(text)}`);
  }
}
