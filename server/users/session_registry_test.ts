import assert from "node:assert/strict";
import { SessionRegistry } from "./session_registry.ts";
import { Tokens } from "./tokens.ts";
import { Hmac } from "../cluster/mod.ts";

Deno.test("sessions: a newer login makes older sessions stale, whatever the order heard", () => {
  const reg = new SessionRegistry();
  const old = { sessionId: "old", issuedAt: 1000 };
  const next = { sessionId: "new", issuedAt: 2000 };
  assert.equal(reg.isCurrent("alice", old), true, "nothing known yet");
  assert.equal(reg.observe("alice", old), true);
  assert.equal(reg.observe("alice", next), true);
  assert.equal(reg.isCurrent("alice", old), false);
  assert.equal(reg.observe("alice", old), false, "an older session heard late changes nothing");
  assert.equal(reg.isCurrent("alice", next), true);
  assert.equal(reg.isCurrent("bob", old), true, "per user");
  // Equal times are ordered by session id on every server alike.
  assert.equal(reg.observe("carol", { sessionId: "b", issuedAt: 5 }), true);
  assert.equal(reg.observe("carol", { sessionId: "a", issuedAt: 5 }), false);
});

Deno.test("tokens: carry issuedAt, reject expired and forged tokens", async () => {
  const tokens = new Tokens(new Hmac("0123456789abcdef0123"), 60_000);
  const { token, claims } = await tokens.issue("alice", 1_000);
  assert.equal(claims.issuedAt, 1_000);
  assert.equal((await tokens.verify(token, 2_000)).sessionId, claims.sessionId);
  await assert.rejects(() => tokens.verify(token, 61_000), { code: "session_expired" });
  const [payload, sig] = token.split(".");
  await assert.rejects(() => tokens.verify(`${payload}x.${sig}`, 2_000), {
    code: "not_authenticated",
  });
});
