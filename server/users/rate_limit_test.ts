import assert from "node:assert/strict";
import { addressKey, KeyedLimiter, LoginLimiter, TokenBucket } from "./rate_limit.ts";

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

Deno.test("rate limit: IPv6 addresses count by their /64, IPv4 by the address", () => {
  assert.equal(addressKey("192.0.2.7"), "192.0.2.7");
  assert.equal(addressKey("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:db8:1:2:bbbb:cccc:dddd:eeee"), "2001:db8:1:2::/64");
  assert.equal(addressKey("[2001:0db8:0001:0002::9]"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:db8::1"), "2001:db8:0:0::/64");
  assert.notEqual(addressKey("2001:db8:1:3::1"), addressKey("2001:db8:1:2::1"));
});

Deno.test("rate limit: login attempts are charged when they begin, refunded when they succeed", () => {
  const clock = fakeClock();
  const limiter = new LoginLimiter({
    loginFailuresPerUser: { capacity: 5, perSecond: 5 / 60 },
    loginFailuresPerAddress: { capacity: 20, perSecond: 20 / 60 },
  }, clock.read);
  // 60 attempts in flight at once: five may go ahead, the rest wait.
  const started = Array.from({ length: 60 }, () => limiter.begin("alice", "192.0.2.1"));
  assert.equal(started.filter((ms) => ms === 0).length, 5);
  assert.ok(started.slice(5).every((ms) => ms > 0));
  // One of the five was the right password: it gives its token back.
  limiter.succeeded("alice", "192.0.2.1");
  assert.equal(limiter.begin("alice", "192.0.2.1"), 0);
  assert.ok(limiter.begin("alice", "192.0.2.1") > 0);
});
