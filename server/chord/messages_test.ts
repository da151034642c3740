import { deepStrictEqual, ok, throws } from "node:assert/strict";
import { ChordProtocolError } from "./errors.ts";
import { IdSpace } from "./id.ts";
import {
  type ChordRequest,
  type ChordResponse,
  MAX_NODES_PER_MESSAGE,
  parseChordRequest,
  parseChordResponse,
} from "./messages.ts";

const space = new IdSpace(16);
const a = { id: "00ab", address: "sim:a" };
const b = { id: "ff00", address: "https://10.0.0.2:8443" };

const requests: ChordRequest[] = [
  { v: 1, type: "ping" },
  { v: 1, type: "get_predecessor" },
  { v: 1, type: "get_successor_list" },
  { v: 1, type: "notify", node: a },
  { v: 1, type: "find_successor", key: "1234" },
  { v: 1, type: "predecessor_leaving", leaving: a, newPredecessor: b },
  { v: 1, type: "predecessor_leaving", leaving: a, newPredecessor: null },
  { v: 1, type: "successor_leaving", leaving: a, successors: [b] },
];

const responses: ChordResponse[] = [
  { v: 1, type: "pong", node: a },
  { v: 1, type: "predecessor", predecessor: null },
  { v: 1, type: "predecessor", predecessor: b },
  { v: 1, type: "successor_list", node: a, successors: [b, a] },
  { v: 1, type: "ack" },
  { v: 1, type: "successor_found", owner: b, successors: [b] },
  { v: 1, type: "closer_nodes", nodes: [a], successors: [] },
  { v: 1, type: "error", code: "not_a_member", message: "sim:a is not a ring member" },
];

Deno.test("every request survives JSON encoding and parsing unchanged", () => {
  for (const request of requests) {
    deepStrictEqual(parseChordRequest(JSON.parse(JSON.stringify(request)), space), request);
  }
});

Deno.test("every response survives JSON encoding and parsing unchanged", () => {
  for (const response of responses) {
    deepStrictEqual(parseChordResponse(JSON.parse(JSON.stringify(response)), space), response);
  }
});

function rejects(parse: () => unknown, path: string): void {
  throws(parse, (error: unknown) => {
    ok(error instanceof ChordProtocolError, `expected ChordProtocolError, got ${error}`);
    deepStrictEqual(error.path, path);
    ok(error.message.length > 0);
    return true;
  });
}

Deno.test("request parser rejects malformed messages, naming the bad field", () => {
  const req = (value: unknown) => () => parseChordRequest(value, space);
  rejects(req(null), "message");
  rejects(req([]), "message");
  rejects(req("ping"), "message");
  rejects(req({ type: "ping" }), "v");
  rejects(req({ v: 2, type: "ping" }), "v");
  rejects(req({ v: 1, type: "pong" }), "type");
  rejects(req({ v: 1 }), "type");
  rejects(req({ v: 1, type: "notify" }), "node");
  rejects(req({ v: 1, type: "notify", node: { id: "00AB", address: "x" } }), "node.id");
  rejects(req({ v: 1, type: "notify", node: { id: "0ab", address: "x" } }), "node.id");
  rejects(req({ v: 1, type: "notify", node: { id: "00ab" } }), "node.address");
  rejects(req({ v: 1, type: "notify", node: { id: "00ab", address: "" } }), "node.address");
  rejects(
    req({ v: 1, type: "notify", node: { id: "00ab", address: "x".repeat(300) } }),
    "node.address",
  );
  rejects(req({ v: 1, type: "find_successor", key: 5 }), "key");
  rejects(req({ v: 1, type: "find_successor", key: "10000" }), "key");
  rejects(req({ v: 1, type: "predecessor_leaving", leaving: a }), "newPredecessor");
  rejects(
    req({ v: 1, type: "successor_leaving", leaving: a, successors: [a, { id: 1 }] }),
    "successors.1.id",
  );
  rejects(
    req({
      v: 1,
      type: "successor_leaving",
      leaving: a,
      successors: new Array(MAX_NODES_PER_MESSAGE + 1).fill(a),
    }),
    "successors",
  );
});

Deno.test("response parser rejects malformed messages, naming the bad field", () => {
  const res = (value: unknown) => () => parseChordResponse(value, space);
  rejects(res(undefined), "message");
  rejects(res({ v: 1, type: "ping" }), "type");
  rejects(res({ v: 1, type: "pong", node: null }), "node");
  rejects(res({ v: 1, type: "predecessor" }), "predecessor");
  rejects(res({ v: 1, type: "successor_list", node: a, successors: [] }), "successors");
  rejects(res({ v: 1, type: "successor_found", owner: b }), "successors");
  rejects(res({ v: 1, type: "closer_nodes", nodes: [], successors: [] }), "nodes");
  rejects(res({ v: 1, type: "closer_nodes", nodes: [a], successors: "x" }), "successors");
  rejects(res({ v: 1, type: "error", code: 3, message: "m" }), "code");
});

Deno.test("parsers drop fields they do not know", () => {
  const parsed = parseChordRequest({ v: 1, type: "ping", extra: { big: "x".repeat(10) } }, space);
  deepStrictEqual(parsed, { v: 1, type: "ping" });
});
