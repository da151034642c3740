/**
 * Ring-shared rate limit counters between server processes: one counter (a token bucket) per
 * kind and key lives on the primary server of the key's ring key, its *holder*; other servers
 * charge and refund it with a signed POST to `<holder>/limits/rpc`. The messages are typed and
 * checked on both ends by {@link parseLimitRequest} / {@link parseLimitResponse}, which throw a
 * `ProtocolError` naming the bad field. What a counter means (logins, registrations) is the
 * users layer's business; this file only moves `take` and `refund` to the holder.
 */
import {
  describeValue,
  parseJsonFrame,
  ProtocolError,
  readNumber,
  readObject,
  readString,
} from "../../shared/mod.ts";
import type { ClusterKey } from "./cluster_key.ts";
import type { RingService } from "./ring_service.ts";
import { serveSigned, type ServeSignedDeps, signedPost } from "./rpc.ts";

/** Path of the limits RPC endpoint on every server. */
export const LIMITS_RPC_PATH = "/limits/rpc";
/** Largest limits RPC body, in bytes (a request names one kind and one key). */
const MAX_BODY = 4096;

/** The counters the ring shares. */
export const LIMIT_KINDS = ["login_user", "login_address", "registration_address"] as const;
/** One kind of ring-shared counter. */
export type LimitKind = typeof LIMIT_KINDS[number];

/** A request to a counter's holder. */
export type LimitRequest =
  /** Charge one token to `key`'s bucket of `kind`. */
  | { v: 1; type: "limit_take"; kind: LimitKind; key: string }
  /** Give one token back (an attempt that turned out not to count). */
  | { v: 1; type: "limit_refund"; kind: LimitKind; key: string };

/** The holder's answer. */
export type LimitResponse =
  /** The token was taken: the attempt may go ahead. */
  | { v: 1; type: "limit_taken" }
  /** The bucket is empty: nothing was charged; try again in `retryAfterMs`. */
  | { v: 1; type: "limit_refused"; retryAfterMs: number }
  /** The refund was applied. */
  | { v: 1; type: "limit_refunded" };

/** The counters a holder keeps (the users layer's local limiter satisfies it). */
export interface LimitHolder {
  /** Charges `key`; 0 when taken, else the milliseconds to wait (nothing charged). */
  take(kind: LimitKind, key: string): number;
  /** Gives `key` one token back. */
  refund(kind: LimitKind, key: string): void;
}

/** Longest key: an IPv6 /64 or a username fits with room to spare. */
const KEY_RULE = { min: 1, max: 200 };
/** Longest wait a holder may ask for: a day. */
const MAX_RETRY_MS = 86_400_000;

function readHeader(value: unknown): Record<string, unknown> {
  const obj = readObject(value, "");
  if (obj.v !== 1) {
    throw new ProtocolError(
      "unsupported_version",
      "v",
      `Invalid field "v": expected 1, got ${describeValue(obj.v)}`,
    );
  }
  return obj;
}

function readKind(obj: Record<string, unknown>): LimitKind {
  const kind = obj.kind;
  if (typeof kind !== "string" || !(LIMIT_KINDS as readonly string[]).includes(kind)) {
    throw new ProtocolError(
      "bad_frame",
      "kind",
      `Invalid field "kind": expected one of ${LIMIT_KINDS.join(", ")}, got ${describeValue(kind)}`,
    );
  }
  return kind as LimitKind;
}

function unknownType(type: unknown): never {
  throw new ProtocolError(
    "unknown_type",
    "type",
    `Invalid field "type": unknown limits message type ${describeValue(type)}`,
  );
}

/** Validates a limits request (JSON text or a parsed value); throws `ProtocolError`. */
export function parseLimitRequest(input: unknown): LimitRequest {
  const obj = readHeader(typeof input === "string" ? parseJsonFrame(input, MAX_BODY) : input);
  if (obj.type !== "limit_take" && obj.type !== "limit_refund") unknownType(obj.type);
  return {
    v: 1,
    type: obj.type,
    kind: readKind(obj),
    key: readString(obj, "key", "", KEY_RULE),
  };
}

/** Validates a holder's answer (JSON text or a parsed value); throws `ProtocolError`. */
export function parseLimitResponse(input: unknown): LimitResponse {
  const obj = readHeader(typeof input === "string" ? parseJsonFrame(input, MAX_BODY) : input);
  switch (obj.type) {
    case "limit_taken":
      return { v: 1, type: "limit_taken" };
    case "limit_refunded":
      return { v: 1, type: "limit_refunded" };
    case "limit_refused":
      return {
        v: 1,
        type: "limit_refused",
        retryAfterMs: readNumber(obj, "retryAfterMs", "", {
          min: 1,
          max: MAX_RETRY_MS,
          integer: true,
        }),
      };
  }
  unknownType(obj.type);
}

/** Answers one request from the counters `holder` keeps. */
export function answerLimitRequest(holder: LimitHolder, request: LimitRequest): LimitResponse {
  if (request.type === "limit_refund") {
    holder.refund(request.kind, request.key);
    return { v: 1, type: "limit_refunded" };
  }
  const waitMs = holder.take(request.kind, request.key);
  return waitMs > 0
    ? { v: 1, type: "limit_refused", retryAfterMs: Math.min(MAX_RETRY_MS, Math.ceil(waitMs)) }
    : { v: 1, type: "limit_taken" };
}

/** Sends one limits request to `address`; rejects when no valid answer arrives in time. */
export type LimitCall = (address: string, request: LimitRequest) => Promise<LimitResponse>;

/** A {@link LimitCall} over signed HTTP, each call bounded by `timeoutMs`. */
export function limitsCall(key: ClusterKey, timeoutMs: number): LimitCall {
  return async (address, request) => {
    const { status, text } = await signedPost(
      key,
      address + LIMITS_RPC_PATH,
      JSON.stringify(request),
      timeoutMs,
    );
    if (status !== 200) {
      throw new Error(`Limits RPC to ${address}: HTTP ${status} ${text.slice(0, 200)}`);
    }
    return parseLimitResponse(text);
  };
}

/** Serves `POST /limits/rpc` from the counters `holder` keeps. */
export function handleLimitsHttp(
  req: Request,
  deps: ServeSignedDeps & { holder: LimitHolder },
): Promise<Response> {
  return serveSigned(req, {
    name: "limits",
    maxBodyBytes: MAX_BODY,
    parse: parseLimitRequest,
    handle: (request) => answerLimitRequest(deps.holder, request),
  }, deps);
}

/**
 * The holder of a ring key on `ring`: this server when it is the key's primary, otherwise the
 * owner a ring lookup finds. Throws when this server is not in a ring or the lookup fails.
 */
export function limitHolderOf(ring: RingService): (ringKey: string) => Promise<string> {
  const { node } = ring;
  return async (ringKey) => {
    const id = node.space.fromHex(ringKey, "ringKey");
    if (node.isResponsibleFor(id)) return node.self.address;
    return (await node.lookup(id)).owner.address;
  };
}
