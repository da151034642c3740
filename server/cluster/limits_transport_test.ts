import assert from "node:assert/strict";
import { ProtocolError } from "../../shared/mod.ts";
import {
  answerLimitRequest,
  type LimitHolder,
  parseLimitRequest,
  parseLimitResponse,
} from "./limits_transport.ts";

function refusedAt(path: string, fn: () => unknown): void {
  assert.throws(fn, (err) => {
    assert.ok(err instanceof ProtocolError, `not a ProtocolError: ${err}`);
    assert.equal(err.path, path);
    if (path) assert.match(err.message, new RegExp(`"${path}"`));
    return true;
  });
}

Deno.test("limits messages: a valid take and refund parse to themselves", () => {
  const take = { v: 1, type: "limit_take", kind: "login_user", key: "alice" } as const;
  assert.deepEqual(parseLimitRequest(JSON.stringify(take)), take);
  const refund = { v: 1, type: "limit_refund", kind: "registration_address", key: "::/64" };
  assert.deepEqual(parseLimitRequest(refund), refund);
  assert.deepEqual(
    parseLimitResponse('{"v":1,"type":"limit_refused","retryAfterMs":12000}'),
    { v: 1, type: "limit_refused", retryAfterMs: 12_000 },
  );
  assert.deepEqual(parseLimitResponse({ v: 1, type: "limit_taken" }), {
    v: 1,
    type: "limit_taken",
  });
});

Deno.test("limits messages: each bad field is named by a typed error", () => {
  const ok = { v: 1, type: "limit_take", kind: "login_user", key: "alice" };
  refusedAt("v", () => parseLimitRequest({ ...ok, v: 2 }));
  refusedAt("type", () => parseLimitRequest({ ...ok, type: "limit_reset" }));
  refusedAt("kind", () => parseLimitRequest({ ...ok, kind: "everything" }));
  refusedAt("key", () => parseLimitRequest({ ...ok, key: "" }));
  refusedAt("key", () => parseLimitRequest({ ...ok, key: "x".repeat(201) }));
  refusedAt("key", () => parseLimitRequest({ ...ok, key: 7 }));
  refusedAt("", () => parseLimitRequest("not json"));
  refusedAt("retryAfterMs", () => parseLimitResponse({ v: 1, type: "limit_refused" }));
  refusedAt(
    "retryAfterMs",
    () => parseLimitResponse({ v: 1, type: "limit_refused", retryAfterMs: -5 }),
  );
  refusedAt("type", () => parseLimitResponse({ v: 1, type: "limit_take" }));
});

Deno.test("limits messages: a holder answers a take with taken or refused, a refund with refunded", () => {
  let tokens = 1;
  const holder: LimitHolder = {
    take: () => tokens > 0 ? (tokens--, 0) : 2500.4,
    refund: () => void tokens++,
  };
  const take = { v: 1, type: "limit_take", kind: "login_address", key: "192.0.2.1" } as const;
  assert.deepEqual(answerLimitRequest(holder, take), { v: 1, type: "limit_taken" });
  assert.deepEqual(answerLimitRequest(holder, take), {
    v: 1,
    type: "limit_refused",
    retryAfterMs: 2501,
  });
  assert.deepEqual(answerLimitRequest(holder, { ...take, type: "limit_refund" }), {
    v: 1,
    type: "limit_refunded",
  });
  assert.equal(tokens, 1);
});
