import assert from "node:assert/strict";
import { ReplayWindow } from "./replay_window.ts";

Deno.test("replay window: a nonce is admitted once until it expires", () => {
  const w = new ReplayWindow();
  assert.equal(w.admit("n1", 1000, 0), true);
  assert.equal(w.admit("n1", 1000, 500), false);
  assert.equal(w.admit("n2", 1000, 500), true);
  assert.equal(w.admit("n1", 2000, 1000), true, "expired nonces may come again");
});

Deno.test("replay window: expired nonces are forgotten", () => {
  const w = new ReplayWindow();
  for (let i = 0; i < 100; i++) w.admit(`n${i}`, 1000, 0);
  assert.equal(w.size, 100);
  w.admit("late", 5000, 2000);
  assert.equal(w.size, 1);
});

Deno.test("replay window: when full, the oldest nonce is forgotten first", () => {
  const w = new ReplayWindow({ maxEntries: 3 });
  for (const n of ["a", "b", "c", "d"]) assert.ok(w.admit(n, 10_000, 0));
  assert.equal(w.size, 3);
  assert.equal(w.admit("d", 10_000, 1), false);
  assert.equal(w.admit("a", 10_000, 1), true, "a was evicted to make room for d");
});
