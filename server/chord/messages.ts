/**
 * The ring's wire protocol: every request and response is a plain JSON object, one member of a
 * discriminated union on `type`, carrying the protocol version `v`. Ids travel as fixed-width hex.
 * {@link parseChordRequest} and {@link parseChordResponse} are the only way a message from
 * elsewhere becomes typed: they take `unknown` and return the message or throw a
 * {@link ChordProtocolError} naming the bad field.
 */

import { ChordProtocolError } from "./errors.ts";
import { describe, type IdSpace } from "./id.ts";
import type { NodeRefWire } from "./node_ref.ts";

/** Version of the ring protocol spoken by this code. */
export const CHORD_PROTOCOL_VERSION = 1;

/** Upper bound on node lists in a message (successor lists, lookup candidates). */
export const MAX_NODES_PER_MESSAGE = 64;

/** Upper bound on the length of an address. */
export const MAX_ADDRESS_LENGTH = 256;

interface Versioned {
  /** Protocol version; see {@link CHORD_PROTOCOL_VERSION}. */
  readonly v: typeof CHORD_PROTOCOL_VERSION;
}

/** Liveness probe. */
export interface PingRequest extends Versioned {
  readonly type: "ping";
}
/** Asks for the receiver's predecessor (stabilize, Zave 2017). */
export interface GetPredecessorRequest extends Versioned {
  readonly type: "get_predecessor";
}
/** Asks for the receiver's successor list (stabilize and join, Zave 2017). */
export interface GetSuccessorListRequest extends Versioned {
  readonly type: "get_successor_list";
}
/** "I believe I am your predecessor" (Zave 2017: the receiver rectifies). */
export interface NotifyRequest extends Versioned {
  readonly type: "notify";
  readonly node: NodeRefWire;
}
/** One step of an iterative lookup: who owns `key`, or who is closer to it? */
export interface FindSuccessorRequest extends Versioned {
  readonly type: "find_successor";
  readonly key: string;
}
/** Graceful leave, sent to the leaver's successor: your predecessor is leaving. */
export interface PredecessorLeavingRequest extends Versioned {
  readonly type: "predecessor_leaving";
  readonly leaving: NodeRefWire;
  /** The leaver's own predecessor, if it had one. */
  readonly newPredecessor: NodeRefWire | null;
}
/** Graceful leave, sent to the leaver's predecessor: your successor is leaving. */
export interface SuccessorLeavingRequest extends Versioned {
  readonly type: "successor_leaving";
  readonly leaving: NodeRefWire;
  /** The leaver's successor list, to replace it with. */
  readonly successors: readonly NodeRefWire[];
}

/** Every request one ring node sends another. */
export type ChordRequest =
  | PingRequest
  | GetPredecessorRequest
  | GetSuccessorListRequest
  | NotifyRequest
  | FindSuccessorRequest
  | PredecessorLeavingRequest
  | SuccessorLeavingRequest;

/** Answer to `ping`: who answered. */
export interface PongResponse extends Versioned {
  readonly type: "pong";
  readonly node: NodeRefWire;
}
/** Answer to `get_predecessor`; `null` when the receiver knows none. */
export interface PredecessorResponse extends Versioned {
  readonly type: "predecessor";
  readonly predecessor: NodeRefWire | null;
}
/** Answer to `get_successor_list`: the responder and its successor list, nearest first. */
export interface SuccessorListResponse extends Versioned {
  readonly type: "successor_list";
  readonly node: NodeRefWire;
  readonly successors: readonly NodeRefWire[];
}
/** Answer to `notify` and the leave messages. */
export interface AckResponse extends Versioned {
  readonly type: "ack";
}
/** Lookup step answer: `owner` (the responder's successor) owns the key. */
export interface SuccessorFoundResponse extends Versioned {
  readonly type: "successor_found";
  readonly owner: NodeRefWire;
  /** The responder's successor list, in case `owner` has just died. */
  readonly successors: readonly NodeRefWire[];
}
/** Lookup step answer: ask one of these next, best first (each precedes the key). */
export interface CloserNodesResponse extends Versioned {
  readonly type: "closer_nodes";
  readonly nodes: readonly NodeRefWire[];
  /** The responder's successor list: the owner is in it if every closer node turns out dead. */
  readonly successors: readonly NodeRefWire[];
}
/** The receiver could not serve the request (for example it is not a ring member yet). */
export interface ErrorResponse extends Versioned {
  readonly type: "error";
  readonly code: string;
  readonly message: string;
}

/** Every response one ring node sends another. */
export type ChordResponse =
  | PongResponse
  | PredecessorResponse
  | SuccessorListResponse
  | AckResponse
  | SuccessorFoundResponse
  | CloserNodesResponse
  | ErrorResponse;

function fail(path: string, expected: string, value: unknown): never {
  throw new ChordProtocolError(
    path,
    `Invalid field "${path}": expected ${expected}, got ${describe(value)}`,
  );
}

function readObject(value: unknown, path: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    fail(path || "message", "an object", value);
  }
  return value as Record<string, unknown>;
}

function readString(obj: Record<string, unknown>, key: string, path: string, max: number): string {
  const value = obj[key];
  if (typeof value !== "string" || value.length > max) {
    fail(path + key, `a string of at most ${max} characters`, value);
  }
  return value;
}

function readNodeRef(value: unknown, path: string, space: IdSpace): NodeRefWire {
  const obj = readObject(value, path);
  space.fromHex(obj.id, `${path}.id`);
  const address = readString(obj, "address", `${path}.`, MAX_ADDRESS_LENGTH);
  if (address.length === 0) fail(`${path}.address`, "a non-empty address", address);
  return { id: obj.id as string, address };
}

function readOptionalNodeRef(value: unknown, path: string, space: IdSpace): NodeRefWire | null {
  return value === null ? null : readNodeRef(value, path, space);
}

function readNodeList(
  value: unknown,
  path: string,
  space: IdSpace,
  minLength: number,
): NodeRefWire[] {
  if (!Array.isArray(value) || value.length < minLength || value.length > MAX_NODES_PER_MESSAGE) {
    fail(path, `an array of ${minLength}–${MAX_NODES_PER_MESSAGE} nodes`, value);
  }
  return value.map((item, i) => readNodeRef(item, `${path}.${i}`, space));
}

function readHeader(value: unknown): { obj: Record<string, unknown>; type: unknown } {
  const obj = readObject(value, "");
  if (obj.v !== CHORD_PROTOCOL_VERSION) {
    throw new ChordProtocolError(
      "v",
      `Unsupported ring protocol version: expected ${CHORD_PROTOCOL_VERSION}, got ${
        describe(obj.v)
      }`,
    );
  }
  return { obj, type: obj.type };
}

const v = CHORD_PROTOCOL_VERSION;

/**
 * Validates a request received from (or about to be sent to) another node.
 * Throws {@link ChordProtocolError} naming the first bad field.
 */
export function parseChordRequest(value: unknown, space: IdSpace): ChordRequest {
  const { obj, type } = readHeader(value);
  switch (type) {
    case "ping":
    case "get_predecessor":
    case "get_successor_list":
      return { v, type };
    case "notify":
      return { v, type, node: readNodeRef(obj.node, "node", space) };
    case "find_successor":
      space.fromHex(obj.key, "key");
      return { v, type, key: obj.key as string };
    case "predecessor_leaving":
      return {
        v,
        type,
        leaving: readNodeRef(obj.leaving, "leaving", space),
        newPredecessor: readOptionalNodeRef(obj.newPredecessor, "newPredecessor", space),
      };
    case "successor_leaving":
      return {
        v,
        type,
        leaving: readNodeRef(obj.leaving, "leaving", space),
        successors: readNodeList(obj.successors, "successors", space, 0),
      };
    default:
      return fail("type", "a ring request type", type);
  }
}

/**
 * Validates a response received from another node.
 * Throws {@link ChordProtocolError} naming the first bad field.
 */
export function parseChordResponse(value: unknown, space: IdSpace): ChordResponse {
  const { obj, type } = readHeader(value);
  switch (type) {
    case "pong":
      return { v, type, node: readNodeRef(obj.node, "node", space) };
    case "predecessor":
      return { v, type, predecessor: readOptionalNodeRef(obj.predecessor, "predecessor", space) };
    case "successor_list":
      return {
        v,
        type,
        node: readNodeRef(obj.node, "node", space),
        successors: readNodeList(obj.successors, "successors", space, 1),
      };
    case "ack":
      return { v, type };
    case "successor_found":
      return {
        v,
        type,
        owner: readNodeRef(obj.owner, "owner", space),
        successors: readNodeList(obj.successors, "successors", space, 0),
      };
    case "closer_nodes":
      return {
        v,
        type,
        nodes: readNodeList(obj.nodes, "nodes", space, 1),
        successors: readNodeList(obj.successors, "successors", space, 0),
      };
    case "error":
      return {
        v,
        type,
        code: readString(obj, "code", "", 64),
        message: readString(obj, "message", "", 1000),
      };
    default:
      return fail("type", "a ring response type", type);
  }
}

/** The response types that can answer a request of type `T`, besides `error`. */
export interface ResponseTypeFor {
  ping: "pong";
  get_predecessor: "predecessor";
  get_successor_list: "successor_list";
  notify: "ack";
  find_successor: "successor_found" | "closer_nodes";
  predecessor_leaving: "ack";
  successor_leaving: "ack";
}
