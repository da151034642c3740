import assert from "node:assert/strict";
import { KeyedLimiter, LoginLimiter, TokenBucket } from "./rate_limit.ts";

function fakeClock(start = 1_000_000) {
  const clock = { now: start, read: () => clock.now };
  return clock;
}

Deno.test("rate limit: a bucket allows its burst, then refills at its rate", () => {
  const clock = fakeClock();
  const bucket = new TokenBucket({ capacity: 3, perSecond: 2 }, clock.read);
  assert.equal(bucket.take(), true);
  assert.equal(bucket.take(), true);
  assert.equal(bucket.take(), true);
  assert.equal(bucket.take(), false);
  assert.equal(bucket.retryAfterMs(), 500);
  clock.now += 499;
  assert.equal(bucket.take(), false);
  clock.now += 1;
  assert.equal(bucket.take(), true);
  clock.now += 60_000;
  assert.equal(bucket.full, true);
  assert.equal(bucket.tokens, 3, "never above capacity");
});

Deno.test("rate limit: keys are independent and idle keys are pruned", () => {
  const clock = fakeClock();
  const limiter = new KeyedLimiter({ capacity: 1, perSecond: 1 }, clock.read, 2);
  assert.equal(limiter.take("a"), true);
  assert.equal(limiter.take("a"), false);
  assert.equal(limiter.take("b"), true);
  assert.equal(limiter.retryAfterMs("a"), 1000);
  assert.equal(limiter.retryAfterMs("never-seen"), 0);
  clock.now += 1000;
  limiter.prune();
  assert.equal(limiter.size, 0);
  // Bounded: a third busy key evicts the oldest rather than growing the map.
  limiter.take("x");
  limiter.take("y");
  limiter.take("z");
  assert.equal(limiter.size, 2);
});

Deno.test("rate limit: login failures block per username and per address", () => {
  const clock = fakeClock();
  const logins = new LoginLimiter({
    loginFailuresPerUser: { capacity: 5, perSecond: 5 / 60 },
    loginFailuresPerAddress: { capacity: 20, perSecond: 20 / 60 },
  }, clock.read);
  for (let i = 0; i < 5; i++) {
    assert.equal(logins.blockedForMs("alice", "10.0.0.1"), 0);
    logins.failed("alice", "10.0.0.1");
  }
  assert.equal(logins.blockedForMs("alice", "10.0.0.9"), 12_000, "per username, any address");
  assert.equal(logins.blockedForMs("bob", "10.0.0.1"), 0);
  clock.now += 12_000;
  assert.equal(logins.blockedForMs("alice", "10.0.0.1"), 0);
  // 20 failures from one address, spread over many usernames, block that address.
  for (let i = 0; i < 20; i++) logins.failed(`user${i}`, "10.0.0.2");
  assert.equal(logins.blockedForMs("fresh", "10.0.0.2"), 3_000);
  assert.equal(logins.blockedForMs("fresh", "10.0.0.3"), 0);
});
